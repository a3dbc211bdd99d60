import type { GuestMemory } from "../guest-memory.js";

/**
 * Loads a static ELF64 x86-64 executable (a vmlinux, or a freestanding test guest): its
 * PT_LOAD segments at their physical addresses. The image is input we do not trust either:
 * every header field is checked before it is used.
 */

export class ElfError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: not a bootable ELF64 x86-64 image: ${message}`);
    this.name = "ElfError";
  }
}

const PT_LOAD = 1;
const PT_NOTE = 4;
const EM_X86_64 = 62;
const ET_EXEC = 2;
/** Xen ELF note type carrying the PVH entry point (32-bit protected-mode entry). */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export interface LoadedElf {
  entry: number;
  /** PVH entry point, when the image has one. */
  pvhEntry: number | null;
  /** Lowest and highest guest-physical byte loaded. */
  low: number;
  high: number;
}

export function loadElf(image: Buffer, file: string, memory: GuestMemory): LoadedElf {
  const fail = (msg: string): never => {
    throw new ElfError(file, msg);
  };
  if (image.length < 64) fail("shorter than an ELF header");
  if (image.readUInt32BE(0) !== 0x7f454c46) fail("no ELF magic");
  if (image[4] !== 2) fail("not 64-bit (EI_CLASS)");
  if (image[5] !== 1) fail("not little-endian (EI_DATA)");
  if (image.readUInt16LE(16) !== ET_EXEC) fail("not an executable (e_type)");
  if (image.readUInt16LE(18) !== EM_X86_64) fail("not x86-64 (e_machine)");
  const entry = Number(image.readBigUInt64LE(24));
  const phoff = Number(image.readBigUInt64LE(32));
  const phentsize = image.readUInt16LE(54);
  const phnum = image.readUInt16LE(56);
  if (phentsize < 56 || phnum === 0 || phoff + phnum * phentsize > image.length) {
    fail("program headers out of the file");
  }
  let low = Number.MAX_SAFE_INTEGER;
  let high = 0;
  let pvhEntry: number | null = null;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = image.readUInt32LE(ph);
    const offset = Number(image.readBigUInt64LE(ph + 8));
    const paddr = Number(image.readBigUInt64LE(ph + 24));
    const filesz = Number(image.readBigUInt64LE(ph + 32));
    const memsz = Number(image.readBigUInt64LE(ph + 40));
    if (type === PT_NOTE) {
      pvhEntry ??= findPvhEntry(image, offset, filesz);
      continue;
    }
    if (type !== PT_LOAD || memsz === 0) continue;
    if (filesz > memsz || offset + filesz > image.length) fail(`segment ${i} runs past the file`);
    if (!memory.contains(paddr, memsz)) {
      fail(`segment ${i} at 0x${paddr.toString(16)}+${memsz} does not fit in guest RAM`);
    }
    memory.write(paddr, image.subarray(offset, offset + filesz));
    memory.slice(paddr + filesz, memsz - filesz).fill(0);
    low = Math.min(low, paddr);
    high = Math.max(high, paddr + memsz);
  }
  if (high === 0) fail("no loadable segment");
  if (entry < low || entry >= high)
    fail(`entry 0x${entry.toString(16)} is outside the loaded image`);
  return { entry, pvhEntry, low, high };
}

function findPvhEntry(image: Buffer, offset: number, size: number): number | null {
  let at = offset;
  const end = Math.min(offset + size, image.length);
  while (at + 12 <= end) {
    const namesz = image.readUInt32LE(at);
    const descsz = image.readUInt32LE(at + 4);
    const type = image.readUInt32LE(at + 8);
    const name = at + 12;
    const desc = name + align4(namesz);
    if (desc + descsz > end) return null;
    if (type === XEN_ELFNOTE_PHYS32_ENTRY && image.toString("latin1", name, name + 3) === "Xen") {
      return descsz >= 8 ? Number(image.readBigUInt64LE(desc)) : image.readUInt32LE(desc);
    }
    at = desc + align4(descsz);
  }
  return null;
}

const align4 = (n: number) => (n + 3) & ~3;
