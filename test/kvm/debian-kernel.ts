// A stock Debian cloud kernel for tests, from Debian's packages (see image/debian.ts), and a
// brief run of a VM that boots it.
import { debianCloudKernel as kernel } from "../../image/debian.js";
import type { Vm, VmEnd } from "../../src/vmm/index.js";

/** Path of the Debian cloud kernel's vmlinuz (a bzImage). */
export function debianCloudKernel(): string {
  return kernel().path;
}

/**
 * Lets a started VM run briefly, then stops it: how it ended, and vCPU 0's CPU time. A
 * triple fault would end it as "shutdown", a bad entry state as "error", before the stop.
 */
export async function runBriefly(vm: Vm, ms = 1500): Promise<{ end: VmEnd; cpuMs: number }> {
  await new Promise((r) => setTimeout(r, ms));
  await vm.refreshCpuTimes();
  const cpuMs = vm.stats().vcpuTimeMs[0] ?? 0;
  return { end: await vm.stop(), cpuMs };
}
