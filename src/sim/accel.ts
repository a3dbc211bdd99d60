import { existsSync, readFileSync } from "node:fs";

export type AccelRequest = "auto" | "kvm" | "tcg";

/** What the host's KVM is, read from /dev and /sys/module. */
export interface HostKvm {
  devKvm: boolean;
  /** kvm_pvm: a paravirtual KVM (PVM), as on our development machines. */
  pvm: boolean;
  /** The hardware KVM module, if one is loaded. */
  hardware: "kvm_intel" | "kvm_amd" | null;
  /** Its `nested` parameter: whether guests get VMX/SVM of their own. */
  nested: boolean | null;
}

export interface AccelChoice {
  accel: "kvm" | "tcg";
  /** QEMU's -cpu. */
  cpu: "host" | "max";
  /** One sentence for the operator: what was chosen and why. */
  reason: string;
  /** Something the operator should know about the choice, or null. */
  warning: string | null;
}

function readFlag(path: string): boolean | null {
  try {
    return /^(1|y|Y)$/.test(readFileSync(path, "utf8").trim());
  } catch {
    return null;
  }
}

export function probeHostKvm(sys = "/sys/module", dev = "/dev/kvm"): HostKvm {
  const hardware = existsSync(`${sys}/kvm_intel`)
    ? "kvm_intel"
    : existsSync(`${sys}/kvm_amd`)
      ? "kvm_amd"
      : null;
  return {
    devKvm: existsSync(dev),
    pvm: existsSync(`${sys}/kvm_pvm`),
    hardware,
    nested: hardware ? readFlag(`${sys}/${hardware}/parameters/nested`) : null,
  };
}

const TCG_COST =
  "software emulation is slower, but gives every node SVM/VMX and a /dev/kvm of its own";

/**
 * KVM only where it is known to boot stock kernels: a hardware KVM module (kvm_intel or
 * kvm_amd). A paravirtual KVM (kvm_pvm) runs tiny real-mode and long-mode guests, but QEMU
 * -enable-kvm with a stock Debian kernel hung after "Booting from ROM" on it (measured on our
 * machines, see DESIGN.md); this is a rule from that measurement, not a probe of each boot.
 */
export function chooseAccel(request: AccelRequest, host: HostKvm): AccelChoice {
  if (request === "tcg") return tcgBecause("it was asked for with --accel tcg");
  const nestedWarning =
    host.nested === false
      ? `${host.hardware} has nested=0: the nodes get no /dev/kvm of their own (modprobe ${host.hardware} nested=1 to change that)`
      : null;
  if (request === "kvm") {
    if (!host.devKvm) return tcgBecause("--accel kvm was asked for, but there is no /dev/kvm");
    return {
      accel: "kvm",
      cpu: "host",
      reason: "KVM (-cpu host), as asked with --accel kvm",
      warning: host.pvm
        ? "this host's KVM is PVM (kvm_pvm), on which stock kernels did not boot: the nodes may hang after 'Booting from ROM'"
        : nestedWarning,
    };
  }
  if (!host.devKvm) return tcgBecause("there is no /dev/kvm on this host");
  if (host.pvm)
    return tcgBecause(
      "this host's /dev/kvm is PVM (kvm_pvm), a paravirtual KVM that runs tiny guests but does not boot stock Linux kernels (QEMU -enable-kvm hangs after 'Booting from ROM')",
    );
  if (!host.hardware)
    return tcgBecause(
      "this host's /dev/kvm comes from neither kvm_intel nor kvm_amd, so it is not known to boot stock kernels (--accel kvm to try it anyway)",
    );
  return {
    accel: "kvm",
    cpu: "host",
    reason: `KVM (-cpu host): ${host.hardware} is loaded, a hardware KVM that boots stock kernels`,
    warning: nestedWarning,
  };
}

function tcgBecause(why: string): AccelChoice {
  return {
    accel: "tcg",
    cpu: "max",
    reason: `TCG with -cpu max, because ${why}; ${TCG_COST}`,
    warning: null,
  };
}

/**
 * What the operator should know about giving each node several vCPUs, or null. Under TCG a
 * node with 2 vCPUs froze (Debian 12's QEMU 7.2): one vCPU went on running its translation of
 * kernel code that the other had just patched (a static key turned on as a microVM started),
 * looping on an int3 no longer in memory with interrupts off, once in 17 microVM starts. With
 * one vCPU, translation and patching happen on one thread and cannot race. QEMU 10.0 from
 * bookworm-backports did not freeze but panicked a 2-vCPU node once in 36 starts. Pure.
 */
export function tcgVcpusWarning(accel: AccelChoice, cpus: number): string | null {
  if (accel.accel !== "tcg" || cpus <= 1) return null;
  return `${cpus} vCPUs per node under TCG: QEMU's multi-threaded TCG has frozen such nodes (a vCPU looping on kernel code that another vCPU had just patched, about once in 17 microVM starts); one vCPU per node cannot race that way`;
}
