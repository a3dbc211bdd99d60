import { spawn } from "node:child_process";
import { chooseAccel, probeHostKvm } from "./accel.js";
import { QEMU } from "./qemu.js";

/**
 * One QEMU machine without network or state directory, booted until its serial console
 * prints a line, then killed: how tests and benchmarks boot the image from a CD, a USB stick
 * or a kernel, on SeaBIOS or UEFI firmware.
 */
export interface OneShot {
  /** Direct kernel boot. */
  kernel?: { vmlinuz: string; initrd: string; cmdline: string };
  /** An ISO as a CD-ROM. */
  cdrom?: string;
  /** A raw image as the first disk, as a USB stick written with dd looks to firmware. */
  disk?: string;
  /** UEFI firmware (OVMF) instead of SeaBIOS. */
  uefi?: string;
  memoryMiB?: number;
  timeoutMs?: number;
}

export interface OneShotResult {
  /** From QEMU's start to the kernel's first line ("Linux version"), ms. */
  kernelMs: number | null;
  /** From QEMU's start to the awaited line, ms. */
  totalMs: number;
  console: string;
}

export function bootUntil(o: OneShot, until: RegExp): Promise<OneShotResult> {
  const accel = chooseAccel("auto", probeHostKvm());
  const args = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-accel",
    accel.accel,
    "-cpu",
    accel.cpu,
    "-m",
    String(o.memoryMiB ?? 1024),
    "-serial",
    "stdio",
    ...(o.uefi ? ["-bios", o.uefi] : []),
    ...(o.kernel
      ? ["-kernel", o.kernel.vmlinuz, "-initrd", o.kernel.initrd, "-append", o.kernel.cmdline]
      : []),
    ...(o.cdrom ? ["-drive", `file=${o.cdrom},media=cdrom,readonly=on,if=ide`] : []),
    ...(o.disk ? ["-drive", `file=${o.disk},format=raw,if=virtio,readonly=on`] : []),
  ];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const qemu = spawn(QEMU, args, { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    let err = "";
    let kernelAt: number | null = null;
    let done = false;
    const finish = (f: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      qemu.kill("SIGKILL");
      f();
    };
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(
            new Error(
              `no ${until} within ${(o.timeoutMs ?? 600_000) / 1000} s; the console ends:\n${text.slice(-2000)}`,
            ),
          ),
        ),
      o.timeoutMs ?? 600_000,
    );
    qemu.stdout.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (kernelAt === null && text.includes("Linux version")) kernelAt = performance.now();
      if (until.test(text)) {
        const now = performance.now();
        finish(() =>
          resolve({
            kernelMs: kernelAt === null ? null : kernelAt - started,
            totalMs: now - started,
            console: text,
          }),
        );
      }
    });
    qemu.stderr.on("data", (d: Buffer) => {
      err += d;
    });
    qemu.on("error", (e) => finish(() => reject(e)));
    qemu.on("exit", (code) =>
      finish(() =>
        reject(
          new Error(
            `${QEMU} exited (${code}) before ${until}: ${err.trim()}\n${text.slice(-2000)}`,
          ),
        ),
      ),
    );
  });
}
