import { Cgroup, type CgroupLimits } from "../cgroups/index.js";
import { loadVmConfig } from "./config.js";

/**
 * What a `flatgrid vmm` process and the agent that starts it agree on. This file loads no
 * koffi, so the grid service (the agent's home) imports it without the KVM bindings.
 */

/** The exit code of a VMM that stopped its VM because the node's lease ran out. */
export const FENCED_EXIT = 3;

/**
 * Node.js flags for a monitor process. V8 lets the main thread's young generation grow to
 * 16 MiB semi-spaces, and a booting guest's exits make it do so; a monitor keeps almost
 * nothing alive between exits, so 1 MiB semi-spaces do the same work in about 4 MiB less.
 * rootfs/usr/bin/flatgrid passes the same for `flatgrid vmm` (test/unit/cgroup.test.ts).
 */
export const VMM_NODE_FLAGS = ["--max-semi-space-size=1"];

/**
 * What the monitor itself needs besides guest RAM: Node.js and koffi (about 73 MiB resident
 * with 2 idle vCPUs, 83 MiB with a disk's queue thread too), a worker thread per vCPU, the
 * page cache of the files it reads.
 */
export function vmmOverheadMiB(vcpus: number): number {
  return 128 + 16 * vcpus;
}

/** The limits of a VM's control group: its vCPUs' time, its RAM plus the monitor's own. */
export function vmCgroupLimits(config: { vcpus: number; memoryMiB: number }): CgroupLimits {
  return {
    cpus: config.vcpus,
    memoryBytes: (config.memoryMiB + vmmOverheadMiB(config.vcpus)) * 2 ** 20,
  };
}

/**
 * Makes the VM's control group (a path below the cgroup root, e.g. flatgrid/shop/web.0)
 * with its limits, and moves this process into it. `flatgrid vmm --cgroup` calls it before
 * the monitor and koffi load, so that nearly all the process's memory is charged there,
 * guest RAM included: a page stays charged to the group where it was first touched.
 */
export function enterVmCgroup(path: string, configFile: string): void {
  const group = new Cgroup(path);
  group.create(vmCgroupLimits(loadVmConfig(configFile)));
  group.join(process.pid);
}
