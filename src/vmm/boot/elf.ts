import { XEN_ELFNOTE_PHYS32_ENTRY } from "../../kvm/index.js";
import type { GuestMemory } from "../guest-memory.js";
import { type ImageBytes, imageBytes, readPiece } from "./image-bytes.js";

/**
 * Loads a static ELF64 x86-64 executable (a vmlinux, or a freestanding test guest): its
 * PT_LOAD segments at their physical addresses, read from the file straight into guest RAM.
 * The image is input we do not trust either: every header field is checked before it is used.
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
/** Below 1 MiB live the VMM's boot tables, zero page, command line and ACPI tables. */
const LOWEST_LOAD_ADDRESS = 0x100000;
/** Notes are small; a bigger PT_NOTE is not read (it cannot hold a sane PVH note). */
const NOTE_MAX = 0x10000;

export interface LoadedElf {
  entry: number;
  /** PVH entry point, when the image has one. */
  pvhEntry: number | null;
  /** Lowest and highest guest-physical byte loaded. */
  low: number;
  high: number;
}

export function isElf(head: Buffer): boolean {
  return head.length >= 4 && head.readUInt32BE(0) === 0x7f454c46;
}

interface ProgramHeader {
  index: number;
  type: number;
  offset: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

/** The ELF header's checks, the entry point and the program headers. */
function readHeaders(
  image: ImageBytes,
  fail: (msg: string) => never,
): { entry: number; headers: ProgramHeader[] } {
  if (image.length < 64) fail("shorter than an ELF header");
  const header = readPiece(image, 0, 64);
  if (!isElf(header)) fail("no ELF magic");
  if (header[4] !== 2) fail("not 64-bit (EI_CLASS)");
  if (header[5] !== 1) fail("not little-endian (EI_DATA)");
  if (header.readUInt16LE(16) !== ET_EXEC) fail("not an executable (e_type)");
  if (header.readUInt16LE(18) !== EM_X86_64) fail("not x86-64 (e_machine)");
  const entry = Number(header.readBigUInt64LE(24));
  const phoff = Number(header.readBigUInt64LE(32));
  const phentsize = header.readUInt16LE(54);
  const phnum = header.readUInt16LE(56);
  if (phentsize < 56 || phnum === 0 || phoff + phnum * phentsize > image.length) {
    fail("program headers out of the file");
  }
  const table = readPiece(image, phoff, phnum * phentsize);
  const headers = Array.from({ length: phnum }, (_, index) => {
    const ph = index * phentsize;
    return {
      index,
      type: table.readUInt32LE(ph),
      offset: Number(table.readBigUInt64LE(ph + 8)),
      paddr: Number(table.readBigUInt64LE(ph + 24)),
      filesz: Number(table.readBigUInt64LE(ph + 32)),
      memsz: Number(table.readBigUInt64LE(ph + 40)),
    };
  });
  return { entry, headers };
}

/** The PVH entry of an ELF kernel, or null when it has no PVH note. */
export function pvhEntryOf(input: Buffer | ImageBytes, file: string): number | null {
  const image = imageBytes(input);
  const { headers } = readHeaders(image, (msg) => {
    throw new ElfError(file, msg);
  });
  for (const h of headers) {
    const entry = h.type === PT_NOTE ? pvhNote(image, h) : null;
    if (entry !== null) return entry;
  }
  return null;
}

function pvhNote(image: ImageBytes, h: ProgramHeader): number | null {
  if (h.filesz > NOTE_MAX || h.offset + h.filesz > image.length) return null;
  return findPvhEntry(readPiece(image, h.offset, h.filesz));
}

export function loadElf(input: Buffer | ImageBytes, file: string, memory: GuestMemory): LoadedElf {
  const fail = (msg: string): never => {
    throw new ElfError(file, msg);
  };
  const image = imageBytes(input);
  const { entry, headers } = readHeaders(image, fail);
  let low = Number.MAX_SAFE_INTEGER;
  let high = 0;
  let pvhEntry: number | null = null;
  for (const { index: i, type, offset, paddr, filesz, memsz } of headers) {
    if (type === PT_NOTE) {
      pvhEntry ??= pvhNote(image, headers[i] as ProgramHeader);
      continue;
    }
    if (type !== PT_LOAD || memsz === 0) continue;
    if (filesz > memsz || offset + filesz > image.length) fail(`segment ${i} runs past the file`);
    if (paddr < LOWEST_LOAD_ADDRESS) {
      fail(`segment ${i} at 0x${paddr.toString(16)} is below 1 MiB, where the boot tables go`);
    }
    if (!memory.contains(paddr, memsz)) {
      fail(
        `segment ${i} at 0x${paddr.toString(16)}+${memsz} does not fit in ${Math.floor(memory.size / 2 ** 20)} MiB of guest RAM`,
      );
    }
    image.copyTo(memory.slice(paddr, filesz), offset);
    memory.slice(paddr + filesz, memsz - filesz).fill(0);
    low = Math.min(low, paddr);
    high = Math.max(high, paddr + memsz);
  }
  if (high === 0) fail("no loadable segment");
  if (entry < low || entry >= high)
    fail(`entry 0x${entry.toString(16)} is outside the loaded image`);
  if (pvhEntry !== null && (pvhEntry < low || pvhEntry >= high)) {
    fail(`PVH entry 0x${pvhEntry.toString(16)} is outside the loaded image`);
  }
  return { entry, pvhEntry, low, high };
}

/** The XEN_ELFNOTE_PHYS32_ENTRY note's address, in a PT_NOTE segment's bytes. */
function findPvhEntry(notes: Buffer): number | null {
  let at = 0;
  while (at + 12 <= notes.length) {
    const namesz = notes.readUInt32LE(at);
    const descsz = notes.readUInt32LE(at + 4);
    const type = notes.readUInt32LE(at + 8);
    const name = at + 12;
    const desc = name + align4(namesz);
    if (desc + descsz > notes.length) return null;
    if (type === XEN_ELFNOTE_PHYS32_ENTRY && notes.toString("latin1", name, name + 4) === "Xen\0") {
      // Linux writes it as a 32-bit value (_ASM_PTR in a .long), some images as 64-bit.
      return descsz >= 8 ? Number(notes.readBigUInt64LE(desc)) : notes.readUInt32LE(desc);
    }
    at = desc + align4(descsz);
  }
  return null;
}

const align4 = (n: number) => (n + 3) & ~3;
