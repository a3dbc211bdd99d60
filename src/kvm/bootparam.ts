import type { Layout } from "./layouts.js";

/**
 * The Linux x86 boot protocol's zero page (struct boot_params) and its setup header, from
 * <asm/bootparam.h>: the one home of these offsets and flags, checked against the header
 * by test/kvm/abi.test.ts. Offsets are from the start of boot_params.
 */

export const boot_params: Layout = {
  c: "struct boot_params",
  size: 4096,
  fields: {
    /** Boot protocol 2.14 (Linux 5.0): the RSDP's physical address, so no scan is needed. */
    acpi_rsdp_addr: [0x070, 8],
    ext_ramdisk_image: [0x0c0, 4],
    ext_ramdisk_size: [0x0c4, 4],
    ext_cmd_line_ptr: [0x0c8, 4],
    e820_entries: [0x1e8, 1],
    hdr: [0x1f1, 123],
    "hdr.setup_sects": [0x1f1, 1],
    "hdr.vid_mode": [0x1fa, 2],
    "hdr.boot_flag": [0x1fe, 2],
    "hdr.jump": [0x200, 2],
    "hdr.header": [0x202, 4],
    "hdr.version": [0x206, 2],
    "hdr.type_of_loader": [0x210, 1],
    "hdr.loadflags": [0x211, 1],
    "hdr.code32_start": [0x214, 4],
    "hdr.ramdisk_image": [0x218, 4],
    "hdr.ramdisk_size": [0x21c, 4],
    "hdr.heap_end_ptr": [0x224, 2],
    "hdr.cmd_line_ptr": [0x228, 4],
    "hdr.initrd_addr_max": [0x22c, 4],
    "hdr.kernel_alignment": [0x230, 4],
    "hdr.relocatable_kernel": [0x234, 1],
    "hdr.xloadflags": [0x236, 2],
    "hdr.cmdline_size": [0x238, 4],
    "hdr.pref_address": [0x258, 8],
    "hdr.init_size": [0x260, 4],
    e820_table: [0x2d0, 2560],
  },
};

export const boot_e820_entry: Layout = {
  c: "struct boot_e820_entry",
  size: 20,
  fields: { addr: [0, 8], size: [8, 8], type: [16, 4] },
};

/** "HdrS" in the setup header's header field. */
export const SETUP_HEADER_MAGIC = 0x53726448;
/** 0xAA55 in boot_flag. */
export const SETUP_BOOT_FLAG = 0xaa55;
export const LOADED_HIGH = 1 << 0;
export const KEEP_SEGMENTS = 1 << 6;
export const CAN_USE_HEAP = 1 << 7;
export const XLF_KERNEL_64 = 1 << 0;
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
/** e820 types are not UAPI; these are the firmware's (ACPI spec, table "Address Range Types"). */
export const E820_RAM = 1;
export const E820_RESERVED = 2;

export const BOOTPARAM_CONSTANTS: Record<string, number> = {
  LOADED_HIGH,
  KEEP_SEGMENTS,
  CAN_USE_HEAP,
  XLF_KERNEL_64,
  E820_MAX_ENTRIES_ZEROPAGE,
};

export const BOOTPARAM_HEADERS = ["asm/bootparam.h"];
