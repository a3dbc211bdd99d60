import {
  E820_RAM,
  E820_RESERVED,
  HVM_START_INFO_VERSION,
  hvm_memmap_table_entry,
  hvm_modlist_entry,
  hvm_start_info,
  Struct,
  XEN_HVM_MEMMAP_TYPE_RAM,
  XEN_HVM_MEMMAP_TYPE_RESERVED,
  XEN_HVM_START_MAGIC_VALUE,
} from "../../kvm/index.js";
import type { GuestMemory } from "../guest-memory.js";
import { KernelImageError } from "./image-bytes.js";
import {
  e820Map,
  type LinuxBootOptions,
  type LoadedLinux,
  placeInitrd,
  writeCmdline,
} from "./linux.js";

/**
 * PVH boot (xen/docs/misc/pvh.pandoc; Linux's arch/x86/platform/pvh): an uncompressed ELF
 * kernel entered at the 32-bit address its XEN_ELFNOTE_PHYS32_ENTRY note names, in flat
 * protected mode without paging, with EBX pointing at a struct hvm_start_info. It skips the
 * bzImage's decompressor, which copies and unpacks tens of MiB before the kernel proper runs.
 * The start info, module list and memory map sit just below the test guests' facts at
 * 0x6ff0 and the zero page at 0x7000 (long-mode.ts), and the command line where the 64-bit
 * protocol puts it.
 */
export const START_INFO_ADDRESS = 0x6000;
const MODLIST_ADDRESS = 0x6040;
const MEMMAP_ADDRESS = 0x6080;
const MEMMAP_END = 0x6ff0;
/** What Linux takes from a PVH command line (COMMAND_LINE_SIZE on x86). */
const PVH_CMDLINE_MAX = 2048;

export interface LoadedPvh {
  startInfo: number;
  initrd: LoadedLinux["initrd"];
}

const MEMMAP_TYPES: Record<number, number> = {
  [E820_RAM]: XEN_HVM_MEMMAP_TYPE_RAM,
  [E820_RESERVED]: XEN_HVM_MEMMAP_TYPE_RESERVED,
};

/** Writes the start info for a kernel that ends at kernelEnd; returns where it is. */
export function writePvhStartInfo(
  memory: GuestMemory,
  file: string,
  options: LinuxBootOptions,
  kernelEnd: number,
): LoadedPvh {
  const fail = (msg: string): never => {
    throw new KernelImageError(file, msg);
  };
  memory.slice(START_INFO_ADDRESS, MEMMAP_END - START_INFO_ADDRESS).fill(0);
  const info = new Struct(hvm_start_info, memory.slice(START_INFO_ADDRESS, hvm_start_info.size))
    .set("magic", XEN_HVM_START_MAGIC_VALUE)
    .set("version", HVM_START_INFO_VERSION)
    .set("cmdline_paddr", writeCmdline(memory, options.cmdline, PVH_CMDLINE_MAX, fail));
  if (options.acpiRsdp !== undefined) info.set("rsdp_paddr", options.acpiRsdp);

  // Linux takes the first module as its initrd.
  const initrd = placeInitrd(memory, options.initrd, memory.lowEnd, kernelEnd, fail);
  if (initrd) {
    new Struct(hvm_modlist_entry, memory.slice(MODLIST_ADDRESS, hvm_modlist_entry.size))
      .set("paddr", initrd.address)
      .set("size", initrd.size);
    info.set("nr_modules", 1).set("modlist_paddr", MODLIST_ADDRESS);
  }

  const map = e820Map(memory);
  if (MEMMAP_ADDRESS + map.length * hvm_memmap_table_entry.size > MEMMAP_END) {
    fail("too many memory regions for the PVH memory map");
  }
  map.forEach(([addr, size, type], i) => {
    const at = MEMMAP_ADDRESS + i * hvm_memmap_table_entry.size;
    new Struct(hvm_memmap_table_entry, memory.slice(at, hvm_memmap_table_entry.size))
      .set("addr", addr)
      .set("size", size)
      .set("type", MEMMAP_TYPES[type] ?? XEN_HVM_MEMMAP_TYPE_RESERVED);
  });
  info.set("memmap_paddr", MEMMAP_ADDRESS).set("memmap_entries", map.length);
  return { startInfo: START_INFO_ADDRESS, initrd };
}
