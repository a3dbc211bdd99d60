import { readFileSync, renameSync, writeFileSync } from "node:fs";
import type { Command } from "commander";

/**
 * `flatgrid kernel unpack BZIMAGE --out VMLINUX`: the uncompressed kernel a bzImage carries,
 * which the VMM boots through PVH when it has the note (Debian's kernels do): no decompressor
 * runs in the guest at each boot.
 */
export function addKernelCommand(program: Command): void {
  const kernel = program.command("kernel").description("guest kernels for microVMs");
  kernel
    .command("unpack")
    .description("unpack a bzImage's vmlinux (gzip or LZ4) for a PVH boot")
    .argument("<bzimage>", "the kernel as distributions ship it (vmlinuz)")
    .requiredOption("--out <file>", "where the vmlinux goes")
    .action(async (bzImage: string, options: { out: string }) => {
      const { extractVmlinux } = await import("../vmm/boot/vmlinux.js");
      const { pvhEntryOf } = await import("../vmm/boot/elf.js");
      const vmlinux = extractVmlinux(readFileSync(bzImage), bzImage);
      const pvh = pvhEntryOf(vmlinux, bzImage);
      // Whole or not at all: a VM must never boot half a kernel.
      writeFileSync(`${options.out}.part`, vmlinux);
      renameSync(`${options.out}.part`, options.out);
      process.stdout.write(
        `${options.out}: ${(vmlinux.length / 2 ** 20).toFixed(1)} MiB, ${
          pvh === null
            ? "no PVH note: the VMM will enter it at its 64-bit entry"
            : `PVH entry 0x${pvh.toString(16)}: the VMM will boot it through PVH`
        }\n`,
      );
    });
}
