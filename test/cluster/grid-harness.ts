/**
 * Grid nodes for the cluster tests: each node is the real supervisor (in process mode) in
 * its own network namespace, with its own configuration, state directory and sockets, and
 * a service table holding the grid service; the grid service has the supervisor run etcd.
 * Tests read each node's state through its grid socket, as the CLI does.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { removeGroupTree } from "../../src/cgroups/index.js";
import { callGrid, type GridStatus } from "../../src/grid/index.js";
import { Cluster, type NodeProcess, sleep } from "./netns.js";

const ROOT = join(import.meta.dirname, "..", "..", "..");
// The nodes run what a node image ships: the bundles (image/bundle.ts), not dist/.
const BUNDLED = join(ROOT, "bundle", "src");
const SUPERVISOR = join(BUNDLED, "os", "main.js");
const GRID = join(BUNDLED, "grid", "main.js");
/** The flatgrid command as a node has it. */
export const CLI = join(BUNDLED, "cli", "main.js");

export interface GridNodeHandle {
  index: number;
  dir: string;
  socket: string;
  gridSocket: string;
  process: NodeProcess | null;
}

export interface GridClusterOptions {
  nodes: number;
  grid?: string;
  token?: string;
  /** Per-node token override (index -> token), for wrong-token tests. */
  tokens?: Record<number, string>;
  windowMs?: number;
  deadGraceMs?: number;
  instanceGraceMs?: number;
  /** How long a guest may take to say it is ready (default: the grid's own). */
  bootDeadlineMs?: number;
  /** The appliance catalog every node's agent runs instances from (default: none there). */
  images?: string;
  /** Nodes without that catalog (as if booted over PXE): their class images come from peers. */
  noCatalog?: number[];
  /** Nodes configured with no grid and no token: set up later (the console's setup form). */
  unconfigured?: number[];
  log?: (line: string) => void;
}

export class GridCluster {
  readonly nodes: GridNodeHandle[] = [];
  private constructor(
    readonly cluster: Cluster,
    readonly base: string,
    readonly options: GridClusterOptions,
  ) {}

  static create(options: GridClusterOptions): GridCluster {
    const cluster = Cluster.create({ nodes: options.nodes, log: options.log });
    const base = join(
      "/tmp",
      `flatgrid-grid-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
    );
    sweepTestCgroups();
    const g = new GridCluster(cluster, base, options);
    for (let i = 1; i <= options.nodes; i++) g.prepare(i);
    return g;
  }

  private prepare(index: number): void {
    const dir = join(this.base, `n${index}`);
    rmSync(dir, { recursive: true, force: true });
    for (const d of ["etc", "run", "state"]) mkdirSync(join(dir, d), { recursive: true });
    const token =
      this.options.tokens?.[index] ?? this.options.token ?? "test-token-0123456789abcdef";
    writeFileSync(
      join(dir, "etc", "node.conf"),
      this.options.unconfigured?.includes(index)
        ? `flatgrid.hostname=node-${index}\n`
        : `flatgrid.grid=${this.options.grid ?? "testgrid"}\nflatgrid.token=${token}\nflatgrid.hostname=node-${index}\n`,
    );
    writeFileSync(join(dir, "cmdline"), "\n");
    const grid = {
      name: "grid",
      command: [
        process.execPath,
        GRID,
        `--state-dir=${join(dir, "state")}`,
        `--config-dir=${join(dir, "etc")}`,
        // The node's own settings, as the data partition holds them on a node.
        `--config-dir=${join(dir, "state")}`,
        `--cmdline=${join(dir, "cmdline")}`,
        `--address=${this.cluster.node(index).links[0]?.address}`,
        ...(this.options.windowMs ? [`--window-ms=${this.options.windowMs}`] : []),
        `--dead-grace-ms=${this.options.deadGraceMs ?? 5000}`,
        `--instance-grace-ms=${this.options.instanceGraceMs ?? 5000}`,
        ...(this.options.bootDeadlineMs
          ? [`--boot-deadline-ms=${this.options.bootDeadlineMs}`]
          : []),
        `--instances=${join(dir, "state", "instances")}`,
        // A node in noCatalog has none of its own: it gets class images from its peers.
        `--images=${(!this.options.noCatalog?.includes(index) && this.options.images) || join(dir, "catalog")}`,
        `--image-cache=${join(dir, "state", "images")}`,
        `--cgroup-parent=${this.cgroupParent(index)}`,
      ],
      logFormat: "json",
      stopTimeoutMs: 5000,
      restart: { initialDelayMs: 200, maxDelayMs: 2000 },
    };
    writeFileSync(join(dir, "services.json"), JSON.stringify({ services: [grid] }));
    this.nodes[index - 1] = {
      index,
      dir,
      socket: join(dir, "run", "supervisor.sock"),
      gridSocket: join(dir, "run", "grid.sock"),
      process: null,
    };
  }

  node(index: number): GridNodeHandle {
    const n = this.nodes[index - 1];
    if (!n) throw new Error(`no node ${index}`);
    return n;
  }

  /** Starts (or restarts, after a kill) a node's supervisor. */
  start(index: number): NodeProcess {
    const n = this.node(index);
    n.process = this.cluster.spawnNode(index, SUPERVISOR, [
      `--services=${join(n.dir, "services.json")}`,
      `--socket=${n.socket}`,
      `--config-dir=${join(n.dir, "etc")}`,
      `--settings-dir=${join(n.dir, "state")}`,
      `--cmdline=${join(n.dir, "cmdline")}`,
    ]);
    return n.process;
  }

  startAll(): void {
    for (const n of this.nodes) this.start(n.index);
  }

  async status(index: number): Promise<GridStatus | null> {
    try {
      return await callGrid<GridStatus>("GET", "/v1/grid", this.node(index).gridSocket);
    } catch {
      return null;
    }
  }

  async statuses(indexes = this.nodes.map((n) => n.index)): Promise<(GridStatus | null)[]> {
    return Promise.all(indexes.map((i) => this.status(i)));
  }

  /** Power loss: every process of the node, supervisor, grid service and etcd, gets SIGKILL. */
  async powerOff(index: number): Promise<void> {
    this.cluster.signalAll(index, "SIGKILL");
    await this.node(index).process?.exited;
    this.node(index).process = null;
    await sleep(100);
  }

  /** The grid service's pid on a node, from its supervisor. */
  gridPid(index: number): number {
    // Read /proc rather than `pgrep -f PATTERN`: the shell that runs pgrep carries the
    // pattern in its own command line, and after a pid wrap it sorts first (kill ESRCH).
    const want = `--state-dir=${join(this.node(index).dir, "state")}`;
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      let argv: string[];
      try {
        argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      } catch {
        continue; // gone meanwhile
      }
      if (argv.includes(GRID) && argv.includes(want)) return Number(entry);
    }
    return 0;
  }

  /** Polls until `check` holds on the given statuses; returns them. */
  async until(
    what: string,
    check: (s: (GridStatus | null)[]) => boolean,
    timeoutMs: number,
    indexes = this.nodes.map((n) => n.index),
  ): Promise<(GridStatus | null)[]> {
    const deadline = Date.now() + timeoutMs;
    let last: (GridStatus | null)[] = [];
    while (Date.now() < deadline) {
      last = await this.statuses(indexes);
      if (check(last)) return last;
      await sleep(200);
    }
    throw new Error(
      `timed out after ${timeoutMs} ms waiting for ${what}; last statuses:\n${JSON.stringify(last.map(brief), null, 1)}\n${this.gridLogs(40)}`,
    );
  }

  /** The end of every running node's grid service log, for failure messages. */
  gridLogs(lines: number): string {
    return this.nodes
      .filter((n) => n.process)
      .map((n) => {
        const r = spawnSync(
          process.execPath,
          [CLI, "logs", "grid", "-n", String(lines), "--socket", n.socket],
          { encoding: "utf8", timeout: 10_000 },
        );
        return `--- node-${n.index} grid log:\n${(r.stdout || r.stderr).trimEnd()}`;
      })
      .join("\n");
  }

  /** Where a node's VMMs get their control groups: a tree of the test's own. */
  cgroupParent(index: number): string {
    return `${TEST_CGROUPS}/${basename(this.base)}/n${index}`;
  }

  async destroy(): Promise<void> {
    await this.cluster.destroy();
    rmSync(this.base, { recursive: true, force: true });
    removeGroupTree(`${TEST_CGROUPS}/${basename(this.base)}`);
  }
}

/** Below each cgroup tree's root: where the cluster tests' VMMs run. */
const TEST_CGROUPS = "flatgrid-test";

/** Control groups a crashed earlier run left (flatgrid-grid-PID-...: that PID is gone). */
function sweepTestCgroups(): void {
  for (const tree of ["cpu", "memory"]) {
    let names: string[] = [];
    try {
      names = readdirSync(`/sys/fs/cgroup/${tree}/${TEST_CGROUPS}`);
    } catch {
      continue;
    }
    for (const name of names) {
      const pid = Number(/^flatgrid-grid-(\d+)-/.exec(name)?.[1] ?? 0);
      if (pid && pid !== process.pid && !existsSync(`/proc/${pid}`))
        removeGroupTree(`${TEST_CGROUPS}/${name}`);
    }
  }
}

export type MaybeStatus = GridStatus | null;

/** The statuses of nodes that answered. */
export const up = (s: MaybeStatus[]): GridStatus[] => s.filter((x): x is GridStatus => x !== null);

/** One grid, one controller everyone agrees on, every node registered. */
export function formed(count: number) {
  return (all: MaybeStatus[]) => {
    const s = up(all);
    if (s.length !== count) return false;
    const grids = new Set(s.map((x) => x.grid?.id));
    const controllers = new Set(s.map((x) => x.controller));
    return (
      grids.size === 1 &&
      !grids.has(undefined) &&
      controllers.size === 1 &&
      !controllers.has(null) &&
      s.every((x) => x.phase === "member" && x.quorum && x.nodes.length === count)
    );
  };
}

/**
 * One grid of `count` nodes whose etcd has grown to `voters` voters and no learners: only
 * then can it lose a voter and keep quorum (2 voters of 3 nodes lose it with either).
 */
export function formedWithVoters(count: number, voters: number) {
  const one = formed(count);
  return (all: MaybeStatus[]) =>
    one(all) && up(all).every((x) => x.voters.length === voters && x.learners.length === 0);
}

/**
 * All `count` nodes agree on one controller, it is not `old`, and it has written in its
 * term (the next fault must not hit a controller that has only won the election: its term
 * would leave no trace in the history that the fencing test reads).
 */
export function newController(count: number, old: string | null | undefined) {
  return (all: MaybeStatus[]) => {
    const s = up(all);
    const c = new Set(s.map((x) => x.controller));
    const holder = s.find((x) => x.nodeId === s[0]?.controller);
    return (
      s.length === count &&
      c.size === 1 &&
      !c.has(null) &&
      !c.has(old ?? null) &&
      holder !== undefined &&
      holder.term !== null &&
      holder.wroteInTerm === holder.term
    );
  };
}

export function brief(s: GridStatus | null) {
  if (!s) return null;
  return {
    node: s.hostname,
    id: s.nodeId.slice(0, 8),
    phase: s.phase,
    reason: s.reason,
    grid: s.grid?.id.slice(0, 8),
    quorum: s.quorum,
    controller: s.controller?.slice(0, 8) ?? null,
    etcd: s.etcdRole,
    voters: s.voters.length,
    learners: s.learners.length,
    nodes: s.nodes.length,
  };
}
