/**
 * `npm run bench -- boot`: how long the node image takes from kernel start to the
 * supervisor's ready line, next to a busybox-only initrd booted with the same kernel, the
 * same QEMU and the same accelerator in the same run. The ratio is the cost of our userland
 * (init, Node.js, the supervisor). Also the sizes of the image's parts.
 *
 * Kernel start is the kernel's first console line ("Linux version"), so the firmware and
 * QEMU's own start-up are left out of both.
 */
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { debianExtract } from "../image/debian.js";
import { cpioImage, run as tool } from "../image/tools.js";
import { bootUntil, chooseAccel, probeHostKvm, READY_LINE } from "../src/sim/index.js";
import { median, progress, report } from "./report.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const IMAGE = join(ROOT, "build/image");
const RUNS = Number(process.env.FLATGRID_BENCH_RUNS ?? 2);

/** A busybox-only initrd whose /init says so and powers off. */
function busyboxInitrd(dir: string): string {
  const root = join(dir, "root");
  mkdirSync(join(root, "bin"), { recursive: true });
  mkdirSync(join(root, "proc"));
  tool("cp", [join(debianExtract("busybox-static"), "bin/busybox"), join(root, "bin/busybox")]);
  chmodSync(join(root, "bin/busybox"), 0o755);
  symlinkSync("busybox", join(root, "bin/sh"));
  writeFileSync(
    join(root, "init"),
    "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho busybox-ready\n/bin/busybox poweroff -f\n",
    { mode: 0o755 },
  );
  const file = join(dir, "busybox-initrd.img");
  cpioImage(root, file);
  return file;
}

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "flatgrid-bench-boot-"));
  try {
    const accel = chooseAccel("auto", probeHostKvm());
    progress(`accelerator: ${accel.accel} -cpu ${accel.cpu}`);
    const busybox = busyboxInitrd(dir);
    const node: number[] = [];
    const base: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      // Alternate, so that whatever else the machine does falls on both alike.
      const kernel = (initrd: string, cmdline: string) => ({
        vmlinuz: join(IMAGE, "vmlinuz"),
        initrd,
        cmdline: `console=ttyS0 ${cmdline}`,
      });
      const b = await bootUntil({ kernel: kernel(busybox, "quiet") }, /busybox-ready/);
      const bMs = b.totalMs - (b.kernelMs ?? 0);
      base.push(bMs);
      progress(`run ${i + 1}: busybox initrd ready ${Math.round(bMs)} ms after kernel start`);
      const n = await bootUntil(
        {
          kernel: kernel(
            join(IMAGE, "initrd.img"),
            "flatgrid.grid=bench flatgrid.token=bench-token-0123456789",
          ),
        },
        READY_LINE,
      );
      const nMs = n.totalMs - (n.kernelMs ?? 0);
      node.push(nMs);
      progress(`run ${i + 1}: node supervisor ready ${Math.round(nMs)} ms after kernel start`);
    }
    report({
      bench: "boot",
      metric: "kernel start to supervisor ready",
      value: median(node),
      unit: "ms",
      baseline: "the same kernel with a busybox-only initrd, to its /init",
      baseline_value: median(base),
      note: `median of ${RUNS}, QEMU ${accel.accel} -cpu ${accel.cpu}, 1 vCPU, 1 GiB`,
    });
    for (const f of ["vmlinuz", "initrd.img", "flatgrid.iso"])
      report({
        bench: "boot",
        metric: `${f} size`,
        value: statSync(join(IMAGE, f)).size / 2 ** 20,
        unit: "MiB",
      });
    report({
      bench: "boot",
      metric: "busybox initrd size",
      value: statSync(busybox).size / 2 ** 20,
      unit: "MiB",
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
