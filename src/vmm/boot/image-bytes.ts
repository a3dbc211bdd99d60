import { fstatSync, readSync } from "node:fs";
// bootparam.js directly, not kvm/index.js: this file serves the agent too, which loads no koffi.
import { SETUP_HEADER_MAGIC } from "../../kvm/bootparam.js";

/** A kernel or initrd the VMM cannot use, named by its file. */
export class KernelImageError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "KernelImageError";
  }
}

/** A bzImage's first bytes carry the setup header's "HdrS" at 0x202. */
export function isBzImage(head: Buffer): boolean {
  return head.length > 0x206 && head.readUInt32LE(0x202) === SETUP_HEADER_MAGIC;
}

/**
 * A kernel or initrd's bytes, copied straight to where they go in guest RAM. From a file,
 * that skips a copy in the VMM's heap: tens of MiB that stayed resident until a garbage
 * collection, which a quiet VMM may not run for a long time.
 */
export interface ImageBytes {
  readonly length: number;
  /** Fills all of dest from the image's byte offset on. */
  copyTo(dest: Buffer, offset: number): void;
}

/** A file's bytes; the caller closes the descriptor. */
export function fileBytes(fd: number, file: string): ImageBytes {
  const length = fstatSync(fd).size;
  return {
    length,
    copyTo(dest, offset) {
      for (let done = 0; done < dest.length; ) {
        const n = readSync(fd, dest, done, dest.length - done, offset + done);
        if (n <= 0) throw new KernelImageError(file, `ended at byte ${offset + done} while read`);
        done += n;
      }
    },
  };
}

export function imageBytes(image: Buffer | ImageBytes): ImageBytes {
  if (!Buffer.isBuffer(image)) return image;
  return {
    length: image.length,
    copyTo: (dest, offset) => {
      if (image.copy(dest, 0, offset, offset + dest.length) < dest.length) {
        throw new RangeError(`image of ${image.length} bytes read at ${offset}+${dest.length}`);
      }
    },
  };
}

/** A piece of an image read into a small buffer of its own (headers, notes). */
export function readPiece(image: ImageBytes, offset: number, length: number): Buffer {
  const piece = Buffer.alloc(length);
  image.copyTo(piece, offset);
  return piece;
}
