import type { CpuidEntry } from "../kvm/index.js";

/**
 * CPUID for one vCPU, from what KVM supports: each vCPU gets its own APIC id, the
 * hypervisor bit is set (guests must know they are virtual), and the topology says
 * `count` single-threaded cores in one package.
 */
export function normaliseCpuid(
  supported: readonly CpuidEntry[],
  cpu: number,
  count: number,
): CpuidEntry[] {
  return supported.map((original) => {
    const e = { ...original };
    switch (e.function) {
      case 0x1:
        // EBX: APIC id [31:24], logical processors per package [23:16], CLFLUSH size [15:8].
        e.ebx = ((cpu << 24) | (Math.min(count, 255) << 16) | (8 << 8)) >>> 0;
        // ECX bit 31: running under a hypervisor. EDX bit 28: HTT (the count above is valid).
        e.ecx = (e.ecx | (1 << 31)) >>> 0;
        e.edx = (e.edx | (1 << 28)) >>> 0;
        break;
      case 0x4:
        // Cores per package - 1 in EAX[31:26]; threads sharing this cache - 1 in EAX[25:14].
        e.eax = ((e.eax & 0x3fff) | ((count - 1) << 26)) >>> 0;
        break;
      case 0xb:
      case 0x1f:
        // Extended topology: EDX is the x2APIC id; level 0 is SMT (1 thread), level 1 cores.
        e.edx = cpu;
        if (e.index === 0) e.ebx = 1;
        else if (e.index === 1) e.ebx = count;
        break;
      default:
        break;
    }
    return e;
  });
}
