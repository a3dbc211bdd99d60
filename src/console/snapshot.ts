import { existsSync, readdirSync, readFileSync, statfsSync } from "node:fs";
import { cpus, hostname, networkInterfaces } from "node:os";
import type { HaStatus } from "../controller/index.js";
import type { AppSummary, GridStatus } from "../grid/index.js";
import {
  type ControlClient,
  type DataPartitionStatus,
  type LogEntry,
  type NodeConfig,
  parseMeminfo,
  type ServiceStatus,
} from "../os/index.js";

/**
 * What the console shows, gathered in one pass: the node's own state from /proc and /sys,
 * the supervisor's services and logs, and the grid service's view of the grid. Each source
 * can fail on its own (the grid service restarting, no quorum): the snapshot says which and
 * why, and the screens show the rest.
 */

export interface Link {
  name: string;
  /** operstate from /sys/class/net: up, down, unknown... */
  state: string;
  addresses: string[];
}

export interface Usage {
  /** All CPUs over the time since the last sample, 0-100; null on the first sample. */
  cpuPercent: number | null;
  cpus: number;
  memTotalMiB: number;
  memUsedMiB: number;
  disk: { path: string; totalMiB: number; usedMiB: number } | null;
}

export interface NodeInfo {
  bootMode: string;
  config: NodeConfig;
  configErrors: { text: string }[];
  data: DataPartitionStatus | null;
}

export interface Snapshot {
  at: number;
  hostname: string;
  links: Link[];
  usage: Usage;
  node: NodeInfo | null;
  services: ServiceStatus[] | null;
  grid: GridStatus | null;
  apps: AppSummary[] | null;
  ha: HaStatus | null;
  /** The last lines of the supervisor's and the grid service's logs, oldest first. */
  logs: LogEntry[];
  /** What could not be read, by source: "supervisor", "grid", "apps". */
  errors: Record<string, string>;
}

export interface SnapshotSources {
  supervisor: ControlClient;
  grid: ControlClient;
  /** The file system whose use the node screen shows (the data partition on a node). */
  dataDir: string;
  /** How many log lines the node screen keeps. */
  logLines?: number;
}

/** CPU use from /proc/stat: the busy share of the time between two readings. */
export class CpuMeter {
  private last: { busy: number; total: number } | null = null;

  constructor(private readonly path = "/proc/stat") {}

  sample(): number | null {
    const line = readFileSync(this.path, "utf8").split("\n", 1)[0] ?? "";
    const now = parseCpuLine(line);
    if (!now) return null;
    const prev = this.last;
    this.last = now;
    if (!prev || now.total <= prev.total) return null;
    return (100 * (now.busy - prev.busy)) / (now.total - prev.total);
  }
}

/** The aggregate "cpu" line of /proc/stat: busy and total jiffies (iowait counts as idle). */
export function parseCpuLine(line: string): { busy: number; total: number } | null {
  const m = /^cpu\s+(.*)$/.exec(line);
  if (!m?.[1]) return null;
  const f = m[1].trim().split(/\s+/).map(Number);
  if (f.length < 4 || f.some((x) => !Number.isFinite(x))) return null;
  // user nice system idle iowait irq softirq steal (guest time is inside user already).
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

export function readLinks(sysNet = "/sys/class/net"): Link[] {
  const addrs = networkInterfaces();
  let names: string[] = [];
  try {
    names = readdirSync(sysNet);
  } catch {
    names = Object.keys(addrs);
  }
  return (
    names
      .filter((n) => n !== "lo")
      .sort()
      .map((name) => {
        let state = "unknown";
        try {
          state = readFileSync(`${sysNet}/${name}/operstate`, "utf8").trim();
        } catch {
          // A link that went away between the listing and the read.
        }
        const addresses = (addrs[name] ?? [])
          .filter((a) => !a.internal && !(a.family === "IPv6" && a.address.startsWith("fe80")))
          .map((a) => a.cidr ?? a.address);
        return { name, state, addresses };
      })
      // Taps and bridges of the instances would crowd the screen: they are the instances'.
      .filter((l) => !/^(fgt|fgb|fgv|tap|veth)/.test(l.name) || l.addresses.length > 0)
  );
}

function readUsage(cpu: CpuMeter, cpuCount: number, dataDir: string): Usage {
  const mem = parseMeminfo(readFileSync("/proc/meminfo", "utf8"));
  const MiB = (kib: number) => Math.round(kib / 1024);
  let disk: Usage["disk"] = null;
  const path = existsSync(dataDir) ? dataDir : "/";
  try {
    const s = statfsSync(path);
    const totalMiB = Math.round((s.blocks * s.bsize) / 2 ** 20);
    disk = { path, totalMiB, usedMiB: totalMiB - Math.round((s.bfree * s.bsize) / 2 ** 20) };
  } catch {
    disk = null;
  }
  return {
    cpuPercent: cpu.sample(),
    cpus: cpuCount,
    memTotalMiB: MiB(mem.totalKiB),
    memUsedMiB: MiB(mem.totalKiB - mem.availableKiB),
    disk,
  };
}

/** The last `lines` entries of a service's log (without following it). */
export async function lastLogLines(
  client: ControlClient,
  service: string,
  lines: number,
): Promise<LogEntry[]> {
  const out: LogEntry[] = [];
  await client.logs(service, { lines, follow: false }, (e) => out.push(e));
  return out;
}

export class SnapshotReader {
  private readonly cpu = new CpuMeter();
  /** Counted once, as the inventory does: it does not change while the console runs. */
  private readonly cpuCount = cpus().length || 1;

  constructor(private readonly sources: SnapshotSources) {
    this.cpu.sample();
  }

  /**
   * `apps`: also read the applications and HA, which cost the grid service reads of etcd;
   * only the grid screen shows them, so the node screen does not ask every 2 s.
   */
  async read(opts: { apps?: boolean } = { apps: true }): Promise<Snapshot> {
    const { supervisor, grid } = this.sources;
    const errors: Record<string, string> = {};
    const attempt = async <T>(source: string, call: () => Promise<T>): Promise<T | null> => {
      try {
        return await call();
      } catch (err) {
        errors[source] ??= (err as Error).message;
        return null;
      }
    };
    const lines = this.sources.logLines ?? 8;
    const [node, services, gridStatus, supervisorLog, gridLog] = await Promise.all([
      attempt("supervisor", () => supervisor.get<NodeInfo>("/v1/node")),
      attempt("supervisor", () =>
        supervisor.get<{ services: ServiceStatus[] }>("/v1/services").then((r) => r.services),
      ),
      attempt("grid", () => grid.get<GridStatus>("/v1/grid")),
      attempt("supervisor", () => lastLogLines(supervisor, "supervisor", lines)),
      // The grid service may not exist on this node (boot mode, configuration).
      lastLogLines(supervisor, "grid", lines).catch(() => []),
    ]);
    const member = gridStatus?.phase === "member" && gridStatus.quorum;
    const [apps, ha] =
      member && opts.apps
        ? await Promise.all([
            attempt("apps", () => grid.get<{ apps: AppSummary[] }>("/v1/apps").then((r) => r.apps)),
            attempt("apps", () => grid.get<HaStatus>("/v1/grid/ha")),
          ])
        : [null, null];
    const logs = [...(supervisorLog ?? []), ...gridLog]
      .sort((a, b) => a.time - b.time)
      .slice(-lines);
    return {
      at: Date.now(),
      hostname: gridStatus?.hostname ?? hostname(),
      links: readLinks(),
      usage: readUsage(this.cpu, this.cpuCount, this.sources.dataDir),
      node,
      services,
      grid: gridStatus,
      apps,
      ha,
      logs,
      errors,
    };
  }
}
