import {
  boot_e820_entry,
  boot_params,
  CAN_USE_HEAP,
  E820_MAX_ENTRIES_ZEROPAGE,
  E820_RAM,
  E820_RESERVED,
  LOADED_HIGH,
  SETUP_BOOT_FLAG,
  SETUP_HEADER_MAGIC,
  Struct,
  XLF_KERNEL_64,
} from "../../kvm/index.js";
import { type GuestMemory, MMIO_HOLE_END } from "../guest-memory.js";
import { type ImageBytes, imageBytes, KernelImageError } from "./image-bytes.js";
import { ZERO_PAGE_ADDRESS } from "./long-mode.js";

/**
 * The Linux x86 64-bit boot protocol for a bzImage (Documentation/arch/x86/boot.rst): the
 * protected-mode kernel at 1 MiB, a zero page with the setup header, the e820 memory map,
 * the command line and the initrd at the top of low memory; the vCPU enters at load + 0x200
 * in long mode with RSI pointing at the zero page.
 */

/** Where things go in guest RAM (below 1 MiB, clear of the boot tables in long-mode.ts). */
const KERNEL_LOAD_ADDRESS = 0x100000;
const CMDLINE_ADDRESS = 0x20000;
const CMDLINE_MAX = 0x10000;
/**
 * The extended BIOS data area and the legacy BIOS/VGA hole: reserved on a PC. The ACPI
 * tables (boot/acpi.ts) live in it, from 0xE0000.
 */
const EBDA_START = 0x9fc00;
const HIGH_MEMORY = 0x100000;
const MIN_VERSION = 0x20c;
/** Where an initrd may end when the kernel does not say (protocol < 2.03's limit). */
const INITRD_ADDR_MAX = 0x3800_0000;
/** What a 64-bit kernel's own header says (arch/x86/boot/header.S): below 2 GiB. */
const INITRD_ADDR_MAX_64 = 0x7fff_ffff;

export interface LinuxBootOptions {
  cmdline: string;
  initrd?: Buffer | ImageBytes;
  /** Where the RSDP is (boot/acpi.ts): kernels before protocol 2.14 find it by a scan. */
  acpiRsdp?: number;
}

export interface LoadedLinux {
  entry: number;
  zeroPage: number;
  kernelEnd: number;
  initrd: { address: number; size: number } | null;
}

export function loadBzImage(
  image: Buffer | ImageBytes,
  file: string,
  memory: GuestMemory,
  options: LinuxBootOptions,
): LoadedLinux {
  const fail = (msg: string): never => {
    throw new KernelImageError(file, msg);
  };
  const source = imageBytes(image);
  if (source.length < 0x1000) fail("too short to be a bzImage");
  const head = Buffer.alloc(0x1000);
  source.copyTo(head, 0);
  const header = new Struct(boot_params, head);
  if (header.get("hdr.boot_flag") !== SETUP_BOOT_FLAG) fail("no boot flag 0xAA55: not a bzImage");
  if (header.get("hdr.header") !== SETUP_HEADER_MAGIC)
    fail('no "HdrS" setup header: not a bzImage');
  const version = header.get("hdr.version");
  if (version < MIN_VERSION) {
    fail(
      `boot protocol ${version >> 8}.${version & 0xff} is older than 2.12: no 64-bit entry point`,
    );
  }
  if (!(header.get("hdr.xloadflags") & XLF_KERNEL_64)) fail("the kernel has no 64-bit entry point");
  if (!(header.get("hdr.loadflags") & LOADED_HIGH))
    fail("not a bzImage (zImage kernels are not supported)");

  const protectedOffset = protectedModeOffset(header);
  if (protectedOffset >= source.length) fail("setup code runs past the end of the file");
  const kernelLength = source.length - protectedOffset;
  // The kernel decompresses itself in place and needs init_size bytes from where it sits.
  const needed = Math.max(kernelLength, header.get("hdr.init_size"));
  const kernelEnd = KERNEL_LOAD_ADDRESS + needed;
  if (!memory.contains(KERNEL_LOAD_ADDRESS, needed)) {
    fail(
      `needs ${Math.ceil(kernelEnd / 2 ** 20)} MiB of RAM to decompress; the VM has ${Math.floor(memory.size / 2 ** 20)} MiB`,
    );
  }
  source.copyTo(memory.slice(KERNEL_LOAD_ADDRESS, kernelLength), protectedOffset);

  const zero = memory.slice(ZERO_PAGE_ADDRESS, boot_params.size);
  zero.fill(0);
  // The setup header as the kernel wrote it: its length is at offset 0x201 (+ 0x202).
  const headerEnd = Math.min(0x202 + (head[0x201] ?? 0), 0x1f1 + 123);
  head.copy(zero, 0x1f1, 0x1f1, headerEnd);
  const params = new Struct(boot_params, zero);
  params
    .set("hdr.type_of_loader", 0xff)
    .set("hdr.vid_mode", 0xffff)
    .set("hdr.loadflags", params.get("hdr.loadflags") | CAN_USE_HEAP)
    .set("hdr.heap_end_ptr", 0xfe00);
  const initrd = fillZeroPage(params, memory, options, kernelEnd, fail);
  return { entry: KERNEL_LOAD_ADDRESS + 0x200, zeroPage: ZERO_PAGE_ADDRESS, kernelEnd, initrd };
}

/**
 * The zero page for a vmlinux entered at its 64-bit entry point (an ELF image without a PVH
 * note): there is no setup header in the file, so we write the fields startup_64 reads.
 */
export function writeVmlinuxZeroPage(
  memory: GuestMemory,
  file: string,
  options: LinuxBootOptions,
  kernelEnd: number,
): LoadedLinux["initrd"] {
  const fail = (msg: string): never => {
    throw new KernelImageError(file, msg);
  };
  const zero = memory.slice(ZERO_PAGE_ADDRESS, boot_params.size);
  zero.fill(0);
  const params = new Struct(boot_params, zero)
    .set("hdr.boot_flag", SETUP_BOOT_FLAG)
    .set("hdr.header", SETUP_HEADER_MAGIC)
    .set("hdr.version", MIN_VERSION)
    .set("hdr.type_of_loader", 0xff)
    .set("hdr.loadflags", LOADED_HIGH)
    .set("hdr.vid_mode", 0xffff)
    .set("hdr.kernel_alignment", 0x100_0000)
    .set("hdr.initrd_addr_max", INITRD_ADDR_MAX_64)
    .set("hdr.cmdline_size", CMDLINE_MAX - 1);
  return fillZeroPage(params, memory, options, kernelEnd, fail);
}

/** Command line, initrd, RSDP and e820 map: what every way into Linux passes. */
function fillZeroPage(
  params: Struct<keyof typeof boot_params.fields>,
  memory: GuestMemory,
  options: LinuxBootOptions,
  kernelEnd: number,
  fail: (msg: string) => never,
): LoadedLinux["initrd"] {
  if (options.acpiRsdp !== undefined) params.set("acpi_rsdp_addr", options.acpiRsdp);
  const cmdlineMax = Math.min(params.get("hdr.cmdline_size") + 1 || 256, CMDLINE_MAX);
  params.set("hdr.cmd_line_ptr", writeCmdline(memory, options.cmdline, cmdlineMax, fail));
  const max = params.get("hdr.initrd_addr_max");
  const top = max ? max + 1 : INITRD_ADDR_MAX;
  const initrd = placeInitrd(memory, options.initrd, top, kernelEnd, fail);
  if (initrd) params.set("hdr.ramdisk_image", initrd.address).set("hdr.ramdisk_size", initrd.size);

  const map = e820Map(memory);
  if (map.length > E820_MAX_ENTRIES_ZEROPAGE) fail("too many memory regions for the zero page");
  const table = params.offset("e820_table");
  map.forEach(([addr, size, type], i) => {
    new Struct(boot_e820_entry, params.buf, table + i * boot_e820_entry.size)
      .set("addr", addr)
      .set("size", size)
      .set("type", type);
  });
  params.set("e820_entries", map.length);
  return initrd;
}

/** The command line, NUL-terminated, at its fixed address; max counts the NUL. */
export function writeCmdline(
  memory: GuestMemory,
  cmdline: string,
  max: number,
  fail: (msg: string) => never,
): number {
  const bytes = Buffer.from(`${cmdline}\0`, "latin1");
  if (bytes.length > max) {
    fail(`command line of ${bytes.length - 1} bytes is longer than the kernel's ${max - 1}`);
  }
  memory.write(CMDLINE_ADDRESS, bytes);
  return CMDLINE_ADDRESS;
}

/** The initrd, page-aligned at the top of low memory (below top), above the kernel. */
export function placeInitrd(
  memory: GuestMemory,
  image: Buffer | ImageBytes | undefined,
  top: number,
  kernelEnd: number,
  fail: (msg: string) => never,
): LoadedLinux["initrd"] {
  if (!image || image.length === 0) return null;
  const source = imageBytes(image);
  const size = source.length;
  const address = Math.floor((Math.min(memory.lowEnd, top) - size) / 4096) * 4096;
  if (address < kernelEnd) {
    fail(
      `an initrd of ${Math.ceil(size / 2 ** 20)} MiB does not fit above the kernel in ${Math.floor(memory.size / 2 ** 20)} MiB of RAM`,
    );
  }
  source.copyTo(memory.slice(address, size), 0);
  return { address, size };
}

/** Where the protected-mode kernel starts in a bzImage: after the boot sector and setup. */
export function protectedModeOffset(header: Struct<keyof typeof boot_params.fields>): number {
  // setup_sects 0 means 4, for the oldest kernels (boot.rst).
  return ((header.get("hdr.setup_sects") || 4) + 1) * 512;
}

/** A PC's memory map: low RAM, the BIOS hole, RAM up to the MMIO hole, RAM above 4 GiB. */
export function e820Map(memory: GuestMemory): [number, number, number][] {
  const map: [number, number, number][] = [
    [0, EBDA_START, E820_RAM],
    [EBDA_START, HIGH_MEMORY - EBDA_START, E820_RESERVED],
  ];
  if (memory.lowEnd > HIGH_MEMORY) map.push([HIGH_MEMORY, memory.lowEnd - HIGH_MEMORY, E820_RAM]);
  for (const region of memory.regions) {
    if (region.guestAddress >= MMIO_HOLE_END)
      map.push([region.guestAddress, region.size, E820_RAM]);
  }
  return map;
}
