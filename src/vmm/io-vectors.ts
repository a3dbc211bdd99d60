import { iovec, preadv, pwritev, UIO_MAXIOV } from "../kvm/index.js";

/**
 * A reusable table of struct iovec for preadv/pwritev on guest RAM. A 1 MiB request of a
 * Linux guest is some 256 buffers of 4 KiB; giving Node's readvSync a Buffer for each cost
 * more than the copy itself (a view, then a V8 call per element to take it apart again).
 * Here each buffer is two numbers written into one table that the kernel reads directly.
 */
export class IoVectors {
  /** Entries held; at most UIO_MAXIOV, what one call takes. */
  count = 0;
  /** Bytes the entries cover. */
  bytes = 0;
  private readonly table = Buffer.alloc(iovec.size * UIO_MAXIOV);
  /** The table as 32-bit words: an entry is base (low, high) then length (low, high). */
  private readonly words = new Uint32Array(
    this.table.buffer,
    this.table.byteOffset,
    this.table.length / 4,
  );

  get full(): boolean {
    return this.count === UIO_MAXIOV;
  }

  clear(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** One buffer at a host address (GuestMemory.hostPointer(), which checked it). */
  add(host: number, length: number): void {
    if (this.count === UIO_MAXIOV) throw new RangeError(`more than ${UIO_MAXIOV} buffers`);
    const w = this.count * 4;
    this.words[w] = host >>> 0;
    this.words[w + 1] = Math.floor(host / 2 ** 32);
    this.words[w + 2] = length >>> 0;
    this.words[w + 3] = 0;
    this.count++;
    this.bytes += length;
  }

  /** preadv at `position`: how many bytes came (fewer only at the end of the file). */
  readAt(fd: number, position: number): number {
    return preadv(fd, this.table, this.count, position, "reading a disk image");
  }

  /** pwritev at `position` until every byte is written; the table is used up after it. */
  writeAllAt(fd: number, position: number): void {
    const want = this.bytes;
    let done = 0;
    // pwritev may write less than asked (a signal, a full file system): go on after it.
    while (done < want) {
      const n = pwritev(fd, this.table, this.count, position + done, "writing a disk image");
      if (n <= 0) throw new Error(`pwritev wrote nothing at byte ${position + done}`);
      done += n;
      if (done < want) this.advance(n);
    }
  }

  /** Drops the first `bytes` bytes: whole entries, then the start of the next one. */
  advance(bytes: number): void {
    this.bytes = Math.max(0, this.bytes - bytes);
    let first = 0;
    while (first < this.count) {
      const length = this.lengthOf(first);
      if (bytes < length) break;
      bytes -= length;
      first++;
    }
    this.words.copyWithin(0, first * 4, this.count * 4);
    this.count -= first;
    if (this.count > 0 && bytes > 0) {
      const base = (this.words[0] ?? 0) + (this.words[1] ?? 0) * 2 ** 32 + bytes;
      this.words[0] = base >>> 0;
      this.words[1] = Math.floor(base / 2 ** 32);
      this.words[2] = this.lengthOf(0) - bytes;
    }
  }

  private lengthOf(i: number): number {
    return this.words[i * 4 + 2] ?? 0;
  }
}
