import { closeSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { run, stampTimes } from "./tools.js";

/**
 * The hybrid ISO: one file that boots from a CD or, written with dd, from a USB stick, on
 * BIOS (GRUB's i386-pc El Torito image and an MBR) and on UEFI (an EFI system partition with
 * GRUB's x86_64-efi), made by grub-mkrescue and xorriso. The menu shows on the screen and on
 * the first serial port; the default entry boots after 3 seconds.
 */

/** Kernel command line of every entry: the screen and the serial port both get the console. */
const CONSOLE = "console=tty0 console=ttyS0,115200";

export function grubConfig(): string {
  return `# flatgrid boot menu. Add flatgrid.* keys (flatgrid.grid=, flatgrid.token=, ...) to a
# linux line with 'e', or set them later on the node's console.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=3
set default=0

menuentry "flatgrid" {
  linux /boot/vmlinuz ${CONSOLE}
  initrd /boot/initrd.img
}

menuentry "flatgrid: format a blank disk as the data partition" {
  linux /boot/vmlinuz ${CONSOLE} flatgrid.format=blank
  initrd /boot/initrd.img
}
`;
}

/** Builds `iso` from the kernel and initrd; `stage` is scratch space. */
export function buildIso(
  vmlinuz: string,
  initrd: string,
  iso: string,
  stage: string,
  epoch: number,
): void {
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(join(stage, "boot/grub"), { recursive: true });
  run("cp", [vmlinuz, join(stage, "boot/vmlinuz")]);
  run("cp", [initrd, join(stage, "boot/initrd.img")]);
  writeFileSync(join(stage, "boot/grub/grub.cfg"), grubConfig());
  stampTimes(stage, epoch);
  rmSync(iso, { force: true });
  // Reproducible: mtools and xorriso take dates from SOURCE_DATE_EPOCH, but grub-mkrescue
  // copies its modules at build time, so every file date and the volume UUID are set here.
  const date = new Date(epoch * 1000).toISOString().replace(/\D/g, "").slice(0, 14);
  run(
    "grub-mkrescue",
    [
      "-o",
      iso,
      stage,
      "--",
      "-volid",
      "FLATGRID",
      "-volume_date",
      "uuid",
      `${date}00`,
      "-volume_date",
      "all_file_dates",
      `${date}00`,
    ],
    { env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) } },
  );
  fixEfiSerial(iso, epoch);
}

/**
 * mformat gives the EFI system partition's FAT a random volume serial, which grub-mkrescue
 * does not let us choose: write a fixed one. Nothing checksums the FAT boot sector.
 */
function fixEfiSerial(iso: string, epoch: number): void {
  const report = run(
    "xorriso",
    ["-indev", iso, "-find", "/efi.img", "-exec", "report_lba", "--"],
    {},
  ).toString();
  const lba = /File data lba:\s*\d+\s*,\s*(\d+)\s*,.*'\/efi\.img'/.exec(report)?.[1];
  if (!lba) throw new Error(`no /efi.img in ${iso}: ${report.slice(0, 500)}`);
  const serial = Buffer.alloc(4);
  serial.writeUInt32LE(epoch >>> 0);
  const fd = openSync(iso, "r+");
  try {
    // BS_VolID of a FAT12/16 boot sector.
    writeSync(fd, serial, 0, 4, Number(lba) * 2048 + 39);
  } finally {
    closeSync(fd);
  }
}
