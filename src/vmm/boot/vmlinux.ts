import { gunzipSync } from "node:zlib";
import { boot_params, Struct } from "../../kvm/index.js";
import { isElf } from "./elf.js";
import { isBzImage, KernelImageError } from "./image-bytes.js";
import { protectedModeOffset } from "./linux.js";

/**
 * Unpacks the vmlinux (an ELF) that a bzImage carries as its compressed payload
 * (payload_offset and payload_length in the setup header, boot protocol 2.08), so that the
 * kernel can boot through PVH. Kernels append the unpacked size as a little-endian u32
 * (scripts/Makefile.lib, size_append). Gzip and LZ4 are unpacked here; Debian's kernels use
 * LZ4. For any other compression the error names it.
 */
export function extractVmlinux(bzImage: Buffer, file: string): Buffer {
  const fail = (msg: string): never => {
    throw new KernelImageError(file, msg);
  };
  if (isElf(bzImage)) fail("already an uncompressed ELF kernel (a vmlinux): boot it as it is");
  if (!isBzImage(bzImage)) fail('no "HdrS" setup header: not a bzImage');
  const header = new Struct(boot_params, bzImage.subarray(0, boot_params.size));
  if (header.get("hdr.version") < 0x208) fail("boot protocol older than 2.08: no payload fields");
  const start = protectedModeOffset(header) + bzImage.readUInt32LE(0x248);
  const length = bzImage.readUInt32LE(0x24c);
  if (length < 8 || start + length > bzImage.length) fail("the payload runs past the file");
  const payload = bzImage.subarray(start, start + length);
  const size = payload.readUInt32LE(length - 4);
  const vmlinux = unpack(payload, size, fail);
  if (vmlinux.length !== size) {
    fail(`the payload unpacked to ${vmlinux.length} bytes, not the ${size} its trailer says`);
  }
  if (!isElf(vmlinux)) fail("the unpacked payload is not an ELF image");
  return vmlinux;
}

const COMPRESSIONS: [string, number[]][] = [
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
  ["bzip2", [0x42, 0x5a, 0x68]],
  ["lzo", [0x89, 0x4c, 0x5a, 0x4f]],
  ["lzma", [0x5d, 0x00, 0x00]],
];

function unpack(payload: Buffer, size: number, fail: (msg: string) => never): Buffer {
  if (payload[0] === 0x1f && payload[1] === 0x8b) {
    try {
      return gunzipSync(payload.subarray(0, payload.length - 4));
    } catch (e) {
      return fail(`the gzip payload is corrupt: ${(e as Error).message}`);
    }
  }
  if (payload.readUInt32LE(0) === LZ4_LEGACY_MAGIC) {
    try {
      return lz4LegacyDecode(payload.subarray(0, payload.length - 4), size);
    } catch (e) {
      return fail(`the LZ4 payload is corrupt: ${(e as Error).message}`);
    }
  }
  const known = COMPRESSIONS.find(([, magic]) => magic.every((b, i) => payload[i] === b));
  return fail(
    known
      ? `its payload is ${known[0]}-compressed, which flatgrid cannot unpack (gzip and LZ4 it can): boot the bzImage`
      : `its payload's compression is unknown (starts ${payload.subarray(0, 6).toString("hex")})`,
  );
}

export const LZ4_LEGACY_MAGIC = 0x184c2102;
/** The legacy frame's blocks unpack to at most 8 MiB each. */
const LZ4_LEGACY_BLOCK = 8 << 20;

export class Lz4Error extends Error {
  constructor(at: number, message: string) {
    super(`at input byte ${at}: ${message}`);
    this.name = "Lz4Error";
  }
}

/**
 * The LZ4 legacy frame (lz4 -l): the magic, then blocks, each a u32 compressed length and an
 * LZ4 block; a repeated magic starts another frame. Stops at the end of the input or once
 * `size` bytes are out (a kernel payload's trailer gives it).
 */
export function lz4LegacyDecode(input: Buffer, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let ip = 0;
  let op = 0;
  while (ip + 4 <= input.length && op < size) {
    const word = input.readUInt32LE(ip);
    ip += 4;
    if (word === LZ4_LEGACY_MAGIC) continue;
    if (word > input.length - ip)
      throw new Lz4Error(ip - 4, `a block of ${word} bytes runs past the input`);
    const written = lz4Block(input, ip, ip + word, out, op, Math.min(size, op + LZ4_LEGACY_BLOCK));
    ip += word;
    op = written;
  }
  if (op !== size) throw new Lz4Error(ip, `ended after ${op} of ${size} bytes`);
  return out;
}

/** One LZ4 block (lz4 block format: sequences of literals and back-references). */
function lz4Block(
  input: Buffer,
  start: number,
  end: number,
  out: Buffer,
  outStart: number,
  outEnd: number,
): number {
  let ip = start;
  let op = outStart;
  const length = (n: number): number => {
    if (n !== 15) return n;
    for (;;) {
      if (ip >= end) throw new Lz4Error(ip, "a length runs past the block");
      const b = input[ip++] as number;
      n += b;
      if (b !== 255) return n;
    }
  };
  while (ip < end) {
    const token = input[ip++] as number;
    const literals = length(token >> 4);
    if (literals > end - ip || literals > outEnd - op) {
      throw new Lz4Error(ip, `${literals} literal bytes run past the block or the output`);
    }
    input.copy(out, op, ip, ip + literals);
    ip += literals;
    op += literals;
    if (ip === end) break; // The last sequence has literals only.
    if (ip + 2 > end) throw new Lz4Error(ip, "a match offset runs past the block");
    const offset = (input[ip] as number) | ((input[ip + 1] as number) << 8);
    ip += 2;
    const match = length(token & 15) + 4;
    if (offset === 0 || offset > op - outStart) {
      throw new Lz4Error(ip - 2, `match offset ${offset} points before the block's output`);
    }
    if (match > outEnd - op)
      throw new Lz4Error(ip, `a match of ${match} bytes runs past the output`);
    if (offset >= match) {
      out.copyWithin(op, op - offset, op - offset + match);
      op += match;
    } else {
      // An overlapping match repeats the last `offset` bytes.
      for (let i = 0; i < match; i++, op++) out[op] = out[op - offset] as number;
    }
  }
  return op;
}
