import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

/**
 * One control group with a CPU and a memory limit, on whichever hierarchy the machine has:
 * cgroup v2 (one tree; what flatgrid's init mounts at /sys/fs/cgroup on a node) or cgroup
 * v1 (one tree per controller; what older hosts, the cluster harness's among them, mount).
 * A VMM creates its instance's group and joins it before it maps guest memory, so the VM's
 * memory and vCPU time are charged there from the first page and the first cycle.
 */

export class CgroupError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`cgroup ${path}: ${message}`);
    this.name = "CgroupError";
  }
}

export interface CgroupLimits {
  /** CPUs' worth of time per period (1.5 = one and a half CPUs). */
  cpus: number;
  memoryBytes: number;
}

export interface CgroupUsage {
  /** CPU time used since the group was made, microseconds. */
  cpuUsec: number;
  memoryBytes: number;
  /** Times the kernel's OOM killer ran in the group because of its memory limit. */
  oomKills: number;
}

/** Where each controller's tree is mounted. */
export interface Hierarchy {
  version: 1 | 2;
  cpu: string;
  /** v1 only: cpuacct counts CPU time; it is often mounted together with cpu. */
  cpuacct: string;
  memory: string;
}

/** The scheduler's period for cpu.max / cpu.cfs_period_us, microseconds. */
export const CPU_PERIOD_US = 100_000;

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/i;

export function detectHierarchy(root = "/sys/fs/cgroup"): Hierarchy {
  const controllers = join(root, "cgroup.controllers");
  if (existsSync(controllers)) {
    const have = readFileSync(controllers, "utf8").trim().split(/\s+/);
    const missing = ["cpu", "memory"].filter((c) => !have.includes(c));
    if (missing.length > 0)
      throw new CgroupError(root, `cgroup v2 without the ${missing.join(" and ")} controller`);
    return { version: 2, cpu: root, cpuacct: root, memory: root };
  }
  const first = (...names: string[]) => names.map((n) => join(root, n)).find((p) => existsSync(p));
  const cpu = first("cpu", "cpu,cpuacct");
  const cpuacct = first("cpuacct", "cpu,cpuacct");
  const memory = first("memory");
  if (!cpu || !cpuacct || !memory)
    throw new CgroupError(root, "no cgroup v2 tree and no cgroup v1 cpu, cpuacct and memory trees");
  return { version: 1, cpu, cpuacct, memory };
}

/**
 * A group by its path below the root ("flatgrid/shop/web.0"): every part a plain name, so
 * that nothing from an application's name can climb out of the tree.
 */
export function checkGroupPath(path: string): string[] {
  const parts = path.split("/");
  for (const p of parts) {
    if (!NAME.test(p) || p === "." || p === "..")
      throw new CgroupError(path, `"${p}" is not a plain name (letters, digits, ".", "_", "-")`);
  }
  return parts;
}

function write(file: string, value: string, path: string): void {
  try {
    writeFileSync(file, value);
  } catch (err) {
    throw new CgroupError(path, `cannot write "${value}" to ${file}: ${(err as Error).message}`);
  }
}

function readNumber(file: string): number {
  try {
    return Number(readFileSync(file, "utf8").trim());
  } catch {
    return 0;
  }
}

function readKey(file: string, key: string): number {
  try {
    const line = readFileSync(file, "utf8")
      .split("\n")
      .find((l) => l.startsWith(`${key} `));
    return line ? Number(line.slice(key.length + 1)) : 0;
  } catch {
    return 0;
  }
}

export class Cgroup {
  private readonly parts: string[];

  constructor(
    readonly path: string,
    readonly hierarchy: Hierarchy = detectHierarchy(),
  ) {
    this.parts = checkGroupPath(path);
  }

  /** The trees the group lives in: one on v2, up to three on v1. */
  private get roots(): string[] {
    const h = this.hierarchy;
    return h.version === 2 ? [h.cpu] : [...new Set([h.cpu, h.cpuacct, h.memory])];
  }

  /** The group's directory in each tree. */
  get dirs(): string[] {
    return this.roots.map((r) => this.dir(r));
  }

  private dir(root: string): string {
    return join(root, ...this.parts);
  }

  /** v2: makes the group and its parents, each parent handing cpu and memory down. */
  private makeV2(): string {
    // v2 hands a controller to children only when every ancestor enables it for its subtree.
    let at = this.hierarchy.cpu;
    for (const part of this.parts) {
      write(join(at, "cgroup.subtree_control"), "+cpu +memory", this.path);
      at = join(at, part);
      mkdirSync(at, { recursive: true });
    }
    return at;
  }

  /**
   * Makes the group if needed and sets its share of CPU time against its siblings, when
   * they all want more than there is (cgroup v2 cpu.weight: 1 to 10000, 100 by default;
   * v1 cpu.shares, scaled from 1024). It takes nothing away from an idle machine.
   */
  setCpuWeight(weight: number): void {
    if (!Number.isInteger(weight) || weight < 1 || weight > 10_000)
      throw new CgroupError(
        this.path,
        `cpu weight must be a whole number from 1 to 10000, not ${weight}`,
      );
    if (this.hierarchy.version === 2) {
      write(join(this.makeV2(), "cpu.weight"), String(weight), this.path);
      return;
    }
    const cpu = this.dir(this.hierarchy.cpu);
    mkdirSync(cpu, { recursive: true });
    write(
      join(cpu, "cpu.shares"),
      String(Math.max(2, Math.round((weight * 1024) / 100))),
      this.path,
    );
  }

  /** The group's cpu.weight (v2) or cpu.shares scaled to it (v1). */
  cpuWeight(): number {
    if (this.hierarchy.version === 2)
      return readNumber(join(this.dir(this.hierarchy.cpu), "cpu.weight"));
    return Math.round((readNumber(join(this.dir(this.hierarchy.cpu), "cpu.shares")) * 100) / 1024);
  }

  /** Makes the group (and its parents) if needed and sets its limits. */
  create(limits: CgroupLimits): void {
    if (!(limits.cpus > 0) || !(limits.memoryBytes >= 4096))
      throw new CgroupError(this.path, `limits out of range: ${JSON.stringify(limits)}`);
    const h = this.hierarchy;
    const quota = String(Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US)));
    const memory = String(Math.floor(limits.memoryBytes / 4096) * 4096);
    if (h.version === 2) {
      const at = this.makeV2();
      write(join(at, "cpu.max"), `${quota} ${CPU_PERIOD_US}`, this.path);
      write(join(at, "memory.max"), memory, this.path);
      // Guest RAM in swap would make the VM crawl rather than fail: keep it in RAM.
      if (existsSync(join(at, "memory.swap.max")))
        write(join(at, "memory.swap.max"), "0", this.path);
      return;
    }
    for (const dir of this.dirs) mkdirSync(dir, { recursive: true });
    const cpu = this.dir(h.cpu);
    write(join(cpu, "cpu.cfs_period_us"), String(CPU_PERIOD_US), this.path);
    write(join(cpu, "cpu.cfs_quota_us"), quota, this.path);
    write(join(this.dir(h.memory), "memory.limit_in_bytes"), memory, this.path);
  }

  /** Moves a process (all its threads) into the group. */
  join(pid: number): void {
    for (const dir of this.dirs) write(join(dir, "cgroup.procs"), String(pid), this.path);
  }

  /** Whether the process is in this group (in every tree). */
  holds(pid: number): boolean {
    let lines: string[];
    try {
      lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n");
    } catch {
      return false;
    }
    const suffix = `/${this.parts.join("/")}`;
    const h = this.hierarchy;
    if (h.version === 2) return lines.some((l) => l.startsWith("0::") && l.endsWith(suffix));
    const inTree = (controller: string) =>
      lines.some((l) => l.split(":")[1]?.split(",").includes(controller) && l.endsWith(suffix));
    return inTree("cpu") && inTree("cpuacct") && inTree("memory");
  }

  limits(): CgroupLimits {
    const h = this.hierarchy;
    if (h.version === 2) {
      const [quota, period] = (() => {
        try {
          return readFileSync(join(this.dir(h.cpu), "cpu.max"), "utf8")
            .trim()
            .split(" ");
        } catch {
          return ["max", String(CPU_PERIOD_US)];
        }
      })();
      return {
        cpus: quota === "max" ? Number.POSITIVE_INFINITY : Number(quota) / Number(period),
        memoryBytes: readNumber(join(this.dir(h.memory), "memory.max")),
      };
    }
    const quota = readNumber(join(this.dir(h.cpu), "cpu.cfs_quota_us"));
    const period = readNumber(join(this.dir(h.cpu), "cpu.cfs_period_us"));
    return {
      cpus: quota < 0 ? Number.POSITIVE_INFINITY : quota / period,
      memoryBytes: readNumber(join(this.dir(h.memory), "memory.limit_in_bytes")),
    };
  }

  /** What the group used; zeros when it does not exist. */
  usage(): CgroupUsage {
    const h = this.hierarchy;
    if (h.version === 2) {
      const dir = this.dir(h.cpu);
      return {
        cpuUsec: readKey(join(dir, "cpu.stat"), "usage_usec"),
        memoryBytes: readNumber(join(dir, "memory.current")),
        oomKills: readKey(join(dir, "memory.events"), "oom_kill"),
      };
    }
    return {
      cpuUsec: Math.round(readNumber(join(this.dir(h.cpuacct), "cpuacct.usage")) / 1000),
      memoryBytes: readNumber(join(this.dir(h.memory), "memory.usage_in_bytes")),
      oomKills: readKey(join(this.dir(h.memory), "memory.oom_control"), "oom_kill"),
    };
  }

  /**
   * Removes the group once nothing runs in it, and the parents it leaves empty up to (not
   * including) `keep` levels from the root. Returns false while a process is still inside.
   */
  remove(keep = 1): boolean {
    for (const root of this.roots) {
      for (let n = this.parts.length; n > keep; n--) {
        const dir = join(root, ...this.parts.slice(0, n));
        try {
          rmdirSync(dir);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === "ENOENT") continue;
          if (n === this.parts.length) return false; // EBUSY: still populated
          break; // a parent with other groups in it stays
        }
      }
    }
    return true;
  }
}

/**
 * Removes a group and every group below it, deepest first, in every tree; what still has a
 * process in it stays. For sweeping up after whole sets of instances (tests, a wiped node).
 */
export function removeGroupTree(path: string, hierarchy: Hierarchy = detectHierarchy()): void {
  const parts = checkGroupPath(path);
  const roots = new Set([hierarchy.cpu, hierarchy.cpuacct, hierarchy.memory]);
  const rm = (dir: string): void => {
    let children: string[];
    try {
      children = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return; // not there
    }
    for (const c of children) rm(join(dir, c));
    try {
      rmdirSync(dir);
    } catch {
      // Still populated.
    }
  };
  for (const root of roots) rm(join(root, ...parts));
}
