/**
 * The PVH boot ABI (Xen's "HVM direct boot", which Linux and KVM monitors share): the start
 * info a 32-bit entry point receives in EBX, and the ELF note that names that entry point.
 * From Xen's public headers <xen/arch-x86/hvm/start_info.h> and <xen/elfnote.h> (Debian
 * libxen-dev); checked against them by test/kvm/abi.test.ts. Linux reads them in
 * arch/x86/platform/pvh/enlighten.c.
 */
import type { Layout } from "./layouts.js";

/** "xEn3" with the 0x80 bit of the "E" set. */
export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
/** Version 1 adds the memory map; Linux refuses a version-0 start info outside Xen. */
export const HVM_START_INFO_VERSION = 1;
export const XEN_HVM_MEMMAP_TYPE_RAM = 1;
export const XEN_HVM_MEMMAP_TYPE_RESERVED = 2;
/** The note type whose descriptor is the 32-bit physical entry address. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export const hvm_start_info: Layout = {
  c: "struct hvm_start_info",
  size: 56,
  fields: {
    magic: [0, 4],
    version: [4, 4],
    flags: [8, 4],
    nr_modules: [12, 4],
    modlist_paddr: [16, 8],
    cmdline_paddr: [24, 8],
    rsdp_paddr: [32, 8],
    memmap_paddr: [40, 8],
    memmap_entries: [48, 4],
    reserved: [52, 4],
  },
};

export const hvm_modlist_entry: Layout = {
  c: "struct hvm_modlist_entry",
  size: 32,
  fields: { paddr: [0, 8], size: [8, 8], cmdline_paddr: [16, 8], reserved: [24, 8] },
};

export const hvm_memmap_table_entry: Layout = {
  c: "struct hvm_memmap_table_entry",
  size: 24,
  fields: { addr: [0, 8], size: [8, 8], type: [16, 4], reserved: [20, 4] },
};

export const PVH_LAYOUTS = [hvm_start_info, hvm_modlist_entry, hvm_memmap_table_entry];

export const PVH_CONSTANTS: Record<string, number> = {
  XEN_HVM_START_MAGIC_VALUE,
  XEN_HVM_MEMMAP_TYPE_RAM,
  XEN_HVM_MEMMAP_TYPE_RESERVED,
  XEN_ELFNOTE_PHYS32_ENTRY,
};

/** start_info.h uses uint32_t without including <stdint.h>. */
export const PVH_HEADERS = ["stdint.h", "xen/arch-x86/hvm/start_info.h", "xen/elfnote.h"];
