import type { CpuidEntry } from "../kvm/index.js";

/** What KVM can do beyond KVM_GET_SUPPORTED_CPUID's answer, which leaves it out. */
export interface CpuidHostFeatures {
  /**
   * KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates the TSC-deadline timer mode.
   * KVM_GET_SUPPORTED_CPUID never sets its bit (Documentation/virt/kvm/api.rst), so a
   * monitor that copies the answer hides it, and the guest programs its timer through the
   * LAPIC's initial-count register instead: the way QEMU and Firecracker set it is ours too.
   */
  tscDeadline: boolean;
}

/** CPUID.1:ECX bit 24, TSC_DEADLINE. */
const TSC_DEADLINE_BIT = 1 << 24;
/** CPUID.1:ECX bit 31, running under a hypervisor. */
const HYPERVISOR_BIT = 1 << 31;
/** CPUID.1:EDX bit 28, HTT: EBX[23:16] counts more than one logical processor. */
const HTT_BIT = 1 << 28;

/**
 * CPUID for one vCPU, from what KVM supports: each vCPU gets its own APIC id, the
 * hypervisor bit is set (guests must know they are virtual), the TSC-deadline timer is
 * announced where KVM has it, and the topology says `count` single-threaded cores in one
 * package.
 */
export function normaliseCpuid(
  supported: readonly CpuidEntry[],
  cpu: number,
  count: number,
  host: CpuidHostFeatures,
): CpuidEntry[] {
  return supported.map((original) => {
    const e = { ...original };
    switch (e.function) {
      case 0x1:
        // EBX: APIC id [31:24], logical processors per package [23:16], CLFLUSH size [15:8].
        e.ebx = ((cpu << 24) | (Math.min(count, 255) << 16) | (8 << 8)) >>> 0;
        e.ecx = (e.ecx | HYPERVISOR_BIT) >>> 0;
        if (host.tscDeadline) e.ecx = (e.ecx | TSC_DEADLINE_BIT) >>> 0;
        // HTT says the package holds several logical processors: only true with several.
        e.edx = count > 1 ? (e.edx | HTT_BIT) >>> 0 : (e.edx & ~HTT_BIT) >>> 0;
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
