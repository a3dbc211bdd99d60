import { AML, RESOURCE } from "./acpi-spec.js";

/**
 * A writer of ACPI Machine Language (ACPI 6.5, 20.2 "AML Grammar Definition") for the few
 * constructs a DSDT of a microVM needs: scopes, devices, named integers, strings and
 * resource templates. Each function returns the encoded bytes of one term, so terms nest by
 * passing one's bytes into another. Inputs come from the VMM, not the guest, but a bad one
 * (a name that is not a NameSeg, a number out of range) throws rather than emit AML the
 * guest's interpreter would misread.
 */

export class AmlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AmlError";
  }
}

/** The largest PkgLength: 28 bits (20.2.4 Package Length Encoding). */
const MAX_PKG_LENGTH = 2 ** 28 - 1;

/**
 * PkgLength for a package whose contents after the PkgLength are `contentLength` bytes: the
 * encoded length counts its own bytes too, 1 byte up to 63, else 2-4 bytes with the count of
 * following bytes in bits 7-6 of the first and the low nibble there (20.2.4).
 */
export function pkgLength(contentLength: number): Buffer {
  if (!Number.isInteger(contentLength) || contentLength < 0) {
    throw new AmlError(`package length ${contentLength} is not a byte count`);
  }
  if (contentLength + 1 <= 0x3f) return Buffer.from([contentLength + 1]);
  for (let extra = 1; extra <= 3; extra++) {
    const total = contentLength + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const out = Buffer.alloc(1 + extra);
      out[0] = (extra << 6) | (total & 0x0f);
      for (let i = 1; i <= extra; i++) out[i] = (total >>> (4 + 8 * (i - 1))) & 0xff;
      return out;
    }
  }
  throw new AmlError(`package of ${contentLength} bytes exceeds ${MAX_PKG_LENGTH}`);
}

/** A NameSeg: four characters, [A-Z_] then [A-Z0-9_], short names padded with "_" (20.2.2). */
export function nameSeg(seg: string): Buffer {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) {
    throw new AmlError(`"${seg}" is not an AML name segment`);
  }
  return Buffer.from(seg.padEnd(4, "_"), "latin1");
}

/** A NameString: "\\" for the root, then segments joined by "." (20.2.2). */
export function nameString(path: string): Buffer {
  const rooted = path.startsWith("\\");
  const rest = rooted ? path.slice(1) : path;
  const segs = rest === "" ? [] : rest.split(".").map(nameSeg);
  if (segs.length > 255) throw new AmlError(`name "${path}" has more than 255 segments`);
  const prefix = rooted ? [Buffer.from([AML.ROOT_CHAR])] : [];
  if (segs.length === 0) {
    if (!rooted) throw new AmlError("empty AML name");
    return Buffer.from([AML.ROOT_CHAR, 0x00]);
  }
  if (segs.length === 1) return Buffer.concat([...prefix, ...segs]);
  if (segs.length === 2)
    return Buffer.concat([...prefix, Buffer.from([AML.DUAL_NAME_PREFIX]), ...segs]);
  return Buffer.concat([...prefix, Buffer.from([AML.MULTI_NAME_PREFIX, segs.length]), ...segs]);
}

/** An integer constant in the fewest bytes: Zero, One, or a Byte/Word/DWord/QWord (20.2.3). */
export function integer(value: number | bigint): Buffer {
  const v = BigInt(value);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) {
    throw new AmlError(`${value} is not an unsigned 64-bit AML integer`);
  }
  if (v === 0n) return Buffer.from([AML.ZERO_OP]);
  if (v === 1n) return Buffer.from([AML.ONE_OP]);
  if (v <= 0xffn) return Buffer.from([AML.BYTE_PREFIX, Number(v)]);
  if (v <= 0xffffn) {
    const b = Buffer.alloc(3);
    b[0] = AML.WORD_PREFIX;
    b.writeUInt16LE(Number(v), 1);
    return b;
  }
  if (v <= 0xffff_ffffn) return dword(Number(v));
  const b = Buffer.alloc(9);
  b[0] = AML.QWORD_PREFIX;
  b.writeBigUInt64LE(v, 1);
  return b;
}

function dword(v: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = AML.DWORD_PREFIX;
  b.writeUInt32LE(v >>> 0, 1);
  return b;
}

/** A String: ASCII characters 0x01-0x7F, NUL-terminated (20.2.3). */
export function string(text: string): Buffer {
  for (const ch of text) {
    const code = ch.codePointAt(0) ?? 0;
    if (code < 0x01 || code > 0x7f) throw new AmlError(`"${text}" is not an ASCII AML string`);
  }
  return Buffer.concat([
    Buffer.from([AML.STRING_PREFIX]),
    Buffer.from(text, "latin1"),
    Buffer.from([0]),
  ]);
}

/**
 * A compressed EISA id, as ASL's EISAID() makes it (6.1.5): three letters in 5 bits each
 * and four hex digits, stored as a DWord whose bytes read in memory order.
 */
export function eisaId(id: string): Buffer {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new AmlError(`"${id}" is not an EISA id`);
  const letter = (i: number) => id.charCodeAt(i) - 0x40;
  const bytes = Buffer.from([
    (letter(0) << 2) | (letter(1) >> 3),
    ((letter(1) & 0x07) << 5) | letter(2),
    Number.parseInt(id.slice(3, 5), 16),
    Number.parseInt(id.slice(5, 7), 16),
  ]);
  return dword(bytes.readUInt32LE(0));
}

/** Name(path, value): binds a data object to a name (20.2.5.1 Namespace Modifier Objects). */
export function name(path: string, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([AML.NAME_OP]), nameString(path), value]);
}

function pkg(opcode: readonly number[], body: readonly Buffer[]): Buffer {
  const content = Buffer.concat(body);
  return Buffer.concat([Buffer.from(opcode), pkgLength(content.length), content]);
}

/** Scope(path) { terms } (20.2.5.1). */
export function scope(path: string, terms: readonly Buffer[]): Buffer {
  return pkg([AML.SCOPE_OP], [nameString(path), ...terms]);
}

/** Device(path) { terms } (20.2.5.2 Named Objects Encoding). */
export function device(path: string, terms: readonly Buffer[]): Buffer {
  return pkg([AML.EXT_OP_PREFIX, AML.DEVICE_OP], [nameString(path), ...terms]);
}

/** Buffer(size) { bytes }, the size given as an integer constant (20.2.5.4). */
export function buffer(bytes: Buffer): Buffer {
  return pkg([AML.BUFFER_OP], [integer(bytes.length), bytes]);
}

/** ResourceTemplate() { descriptors }: a buffer of resource descriptors and an End Tag (6.4). */
export function resourceTemplate(descriptors: readonly Buffer[]): Buffer {
  // A zero checksum in the End Tag tells the OS not to check one (6.4.2.9).
  return buffer(Buffer.concat([...descriptors, Buffer.from([RESOURCE.END_TAG, 0])]));
}

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new AmlError(`${what} ${value} does not fit in 32 bits`);
  }
  return value;
}

/** Memory32Fixed(ReadWrite|ReadOnly, base, length) (6.4.3.4). */
export function memory32Fixed(base: number, length: number, writable = true): Buffer {
  const b = Buffer.alloc(3 + RESOURCE.MEMORY32_FIXED_LENGTH);
  b[0] = RESOURCE.MEMORY32_FIXED_TAG;
  b.writeUInt16LE(RESOURCE.MEMORY32_FIXED_LENGTH, 1);
  b[3] = writable ? RESOURCE.MEMORY_READ_WRITE : 0;
  b.writeUInt32LE(u32(base, "memory base"), 4);
  b.writeUInt32LE(u32(length, "memory length"), 8);
  return b;
}

/** IO(Decode16, base, base, 1, length): a fixed range of I/O ports (6.4.2.5). */
export function ioPorts(base: number, length: number): Buffer {
  if (!Number.isInteger(base) || base < 0 || base > 0xffff) {
    throw new AmlError(`I/O port 0x${base.toString(16)} is not a 16-bit port`);
  }
  if (!Number.isInteger(length) || length < 1 || length > 0xff) {
    throw new AmlError(`I/O range of ${length} ports does not fit a descriptor`);
  }
  const b = Buffer.alloc(8);
  b[0] = RESOURCE.IO_TAG;
  b[1] = RESOURCE.IO_DECODE_16;
  b.writeUInt16LE(base, 2);
  b.writeUInt16LE(base, 4);
  b[6] = 1;
  b[7] = length;
  return b;
}

export interface InterruptOptions {
  edge: boolean;
  activeLow: boolean;
  shared: boolean;
}

/** Interrupt(ResourceConsumer, ...) { gsi }: one global system interrupt (6.4.3.6). */
export function extendedInterrupt(gsi: number, options: InterruptOptions): Buffer {
  const b = Buffer.alloc(9);
  b[0] = RESOURCE.EXTENDED_IRQ_TAG;
  // Flags byte, table length byte, then one 32-bit interrupt number.
  b.writeUInt16LE(6, 1);
  b[3] =
    RESOURCE.IRQ_CONSUMER |
    (options.edge ? RESOURCE.IRQ_EDGE : 0) |
    (options.activeLow ? RESOURCE.IRQ_ACTIVE_LOW : 0) |
    (options.shared ? RESOURCE.IRQ_SHARED : 0);
  b[4] = 1;
  b.writeUInt32LE(u32(gsi, "interrupt"), 5);
  return b;
}
