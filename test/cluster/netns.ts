/**
 * Cluster harness: a private network of namespaces, made as root and removed afterwards.
 *
 *   switch namespace   one Linux bridge per network (br0, br1...), no addresses
 *   node namespaces    eth0 (eth1...) = a veth pair to the bridge of each network the node is
 *                      on; 10.213.<net>.<node>/24 and fd00:213:<net>::<node>/64, lo up, a
 *                      route for 224.0.0.0/4 on the first link, no default route: nothing
 *                      leaves these namespaces.
 *
 * Names carry a prefix, the creating pid and a random suffix (fgc-<pid>-<rand>-n1); a sweep
 * removes namespaces of dead creators. Faults: isolate/partition/heal (bridge ports moved off
 * the bridge: the node still sees its link up), one-way drops (blackhole qdisc), delay
 * (tc netem, when the kernel has it). Node.js programs run inside a node namespace with
 * `ip netns exec`, their stdout read as JSON lines.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { killProcessesIn, pidsInNamespace } from "../../src/sim/index.js";

export const PREFIX = "fgc";
const NS_NAME = /^fgc-(\d+)-([a-z0-9]+)-(sw|n\d+)$/;

export class HarnessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HarnessError";
  }
}

/** Shell commands that mount the cgroup trees this machine has at /sys/fs/cgroup, again. */
const CGROUP_MOUNTS = (() => {
  let text = "";
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return "";
  }
  const steps: string[] = [];
  for (const line of text.split("\n")) {
    const [left, right] = line.split(" - ");
    const point = left?.split(" ")[4] ?? "";
    const [type, , options] = (right ?? "").split(" ");
    if (!/^\/sys\/fs\/cgroup(\/[\w.,=-]+)?$/.test(point)) continue;
    if (
      !type ||
      !["tmpfs", "cgroup", "cgroup2"].includes(type) ||
      !/^[\w.,=-]+$/.test(options ?? "")
    )
      continue;
    steps.push(`mkdir -p ${point} && mount -t ${type} -o ${options} ${type} ${point} && `);
  }
  return steps.join("");
})();

function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", input });
  if (r.status !== 0) {
    throw new HarnessError(`${cmd} ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout;
}

function tryRun(cmd: string, args: string[]): boolean {
  return spawnSync(cmd, args, { stdio: "ignore" }).status === 0;
}

function pidAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

export function listNamespaces(): string[] {
  const out = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout ?? "";
  return out
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n !== "");
}

/** Kills every process in a namespace and deletes it. */
export function removeNamespace(ns: string): void {
  killProcessesIn(ns);
  tryRun("ip", ["netns", "del", ns]);
}

/** Removes namespaces of ours whose creating process is gone. Returns their names. */
export function sweepStale(): string[] {
  const swept: string[] = [];
  // Node namespaces first, the switch last.
  const names = listNamespaces().sort((a, b) =>
    a.endsWith("-sw") ? 1 : b.endsWith("-sw") ? -1 : 0,
  );
  for (const ns of names) {
    const m = NS_NAME.exec(ns);
    if (!m || pidAlive(Number(m[1]))) continue;
    removeNamespace(ns);
    swept.push(ns);
  }
  return swept;
}

export interface Link {
  /** Interface name in the node namespace: eth0, eth1... */
  iface: string;
  network: number;
  address: string;
  address6: string;
  /** The bridge port in the switch namespace. */
  port: string;
}

export interface NodeNs {
  /** 1-based. */
  index: number;
  ns: string;
  links: Link[];
}

export interface TopologyOptions {
  /** How many node namespaces. */
  nodes: number;
  /** Networks of each node (index 0 = node 1); default: every node on network 0 only. */
  networks?: number[][];
  log?: (line: string) => void;
}

export function subnetAddress(network: number, node: number): string {
  return `10.213.${network}.${node}`;
}

export class Cluster {
  readonly id: string;
  readonly switchNs: string;
  readonly nodes: NodeNs[] = [];
  private readonly processes = new Set<NodeProcess>();
  private readonly bridges = new Set<string>();
  private readonly log: (line: string) => void;
  private destroyed = false;
  private readonly onExit = () => this.destroySync();

  private constructor(options: TopologyOptions) {
    this.id = `${PREFIX}-${process.pid}-${randomBytes(3).toString("hex")}`;
    this.switchNs = `${this.id}-sw`;
    this.log = options.log ?? (() => {});
  }

  static create(options: TopologyOptions): Cluster {
    if (process.getuid?.() !== 0) throw new HarnessError("the cluster harness needs root");
    const swept = sweepStale();
    const c = new Cluster(options);
    if (swept.length > 0) c.log(`swept stale namespaces: ${swept.join(" ")}`);
    process.on("exit", c.onExit);
    try {
      c.build(options);
    } catch (err) {
      c.destroySync();
      throw err;
    }
    return c;
  }

  private ip(ns: string, ...args: string[]) {
    run("ip", ["-n", ns, ...args]);
  }

  private sysctl(ns: string, ...settings: string[]) {
    run("ip", ["netns", "exec", ns, "sysctl", "-qw", ...settings]);
  }

  private build(options: TopologyOptions) {
    const t0 = Date.now();
    run("ip", ["netns", "add", this.switchNs]);
    this.ip(this.switchNs, "link", "set", "lo", "up");
    this.sysctl(
      this.switchNs,
      "net.ipv6.conf.all.disable_ipv6=1",
      "net.ipv6.conf.default.disable_ipv6=1",
    );
    const networks = new Set<number>();
    for (let i = 1; i <= options.nodes; i++) {
      for (const n of options.networks?.[i - 1] ?? [0]) networks.add(n);
    }
    for (const n of networks) this.addBridge(`br${n}`);
    for (let i = 1; i <= options.nodes; i++) {
      const ns = `${this.id}-n${i}`;
      run("ip", ["netns", "add", ns]);
      this.sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0");
      this.ip(ns, "link", "set", "lo", "up");
      const node: NodeNs = { index: i, ns, links: [] };
      (options.networks?.[i - 1] ?? [0]).forEach((network, k) => {
        const link: Link = {
          iface: `eth${k}`,
          network,
          address: subnetAddress(network, i),
          address6: `fd00:213:${network}::${i}`,
          port: `n${i}e${k}`,
        };
        this.ip(
          this.switchNs,
          "link",
          "add",
          link.port,
          "type",
          "veth",
          "peer",
          "name",
          link.iface,
          "netns",
          ns,
        );
        this.ip(this.switchNs, "link", "set", link.port, "master", `br${network}`, "up");
        this.ip(ns, "addr", "add", `${link.address}/24`, "dev", link.iface);
        this.ip(ns, "addr", "add", `${link.address6}/64`, "dev", link.iface, "nodad");
        this.ip(ns, "link", "set", link.iface, "up");
        if (k === 0) this.ip(ns, "route", "add", "224.0.0.0/4", "dev", link.iface);
        node.links.push(link);
      });
      this.nodes.push(node);
    }
    this.log(
      `cluster ${this.id}: ${options.nodes} node namespaces on ${networks.size} network(s) in ${Date.now() - t0} ms`,
    );
  }

  private addBridge(name: string) {
    this.ip(
      this.switchNs,
      "link",
      "add",
      name,
      "type",
      "bridge",
      "mcast_snooping",
      "0",
      "stp_state",
      "0",
    );
    this.ip(this.switchNs, "link", "set", name, "up");
    this.bridges.add(name);
  }

  node(index: number): NodeNs {
    const n = this.nodes[index - 1];
    if (!n) throw new HarnessError(`no node ${index}`);
    return n;
  }

  /** Runs a command inside a node namespace and returns its stdout. */
  exec(index: number, cmd: string, ...args: string[]): string {
    return run("ip", ["netns", "exec", this.node(index).ns, cmd, ...args]);
  }

  /**
   * Starts `node <script> <args>` inside a node namespace. Its stdout is read as JSON lines
   * (other lines are kept as text); its stderr is kept for failure messages.
   */
  spawnNode(index: number, script: string, args: string[] = [], name = `n${index}`): NodeProcess {
    // `ip netns exec` mounts a sysfs of the namespace over /sys, which hides the host's
    // cgroup trees: mount them again in its mount namespace, as a node's init mounts its own.
    const child = spawn(
      "ip",
      [
        "netns",
        "exec",
        this.node(index).ns,
        "sh",
        "-c",
        `${CGROUP_MOUNTS}exec "$@"`,
        "sh",
        process.execPath,
        script,
        ...args,
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    const p = new NodeProcess(name, child);
    this.processes.add(p);
    void p.exited.then(() => this.processes.delete(p));
    return p;
  }

  /** Sends a signal to every process in a node namespace (SIGKILL: the node loses power). */
  signalAll(index: number, signal: NodeJS.Signals): number[] {
    const pids = pidsInNamespace(this.node(index).ns).filter((p) => p !== process.pid);
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
      } catch {}
    }
    return pids;
  }

  /** Cuts nodes off from everyone: their bridge ports leave the bridge. */
  isolate(...indexes: number[]): void {
    for (const i of indexes) {
      for (const l of this.node(i).links) this.ip(this.switchNs, "link", "set", l.port, "nomaster");
    }
  }

  /**
   * Splits network 0 into groups that only reach each other (each group on its own bridge);
   * nodes in no group are isolated.
   */
  partition(groups: number[][]): void {
    const inGroup = new Set(groups.flat());
    this.isolate(...this.nodes.map((n) => n.index).filter((i) => !inGroup.has(i)));
    groups.forEach((g, k) => {
      const bridge = `pg${k}`;
      if (!this.bridges.has(bridge)) this.addBridge(bridge);
      for (const i of g) {
        for (const l of this.node(i).links.filter((x) => x.network === 0)) {
          this.ip(this.switchNs, "link", "set", l.port, "master", bridge);
        }
      }
    });
  }

  /** Undoes isolate, partition and one-way drops. */
  heal(): void {
    for (const n of this.nodes) {
      for (const l of n.links) {
        this.ip(this.switchNs, "link", "set", l.port, "master", `br${l.network}`);
        tryRun("tc", ["-n", this.switchNs, "qdisc", "del", "dev", l.port, "root"]);
        tryRun("tc", ["-n", n.ns, "qdisc", "del", "dev", l.iface, "root"]);
      }
    }
  }

  /** Drops everything sent to (direction "in") or by ("out") a node, on all its links. */
  drop(index: number, direction: "in" | "out"): void {
    const n = this.node(index);
    for (const l of n.links) {
      if (direction === "in")
        run("tc", ["-n", this.switchNs, "qdisc", "replace", "dev", l.port, "root", "blackhole"]);
      else run("tc", ["-n", n.ns, "qdisc", "replace", "dev", l.iface, "root", "blackhole"]);
    }
  }

  /** Delays traffic to and from a node (tc netem); throws HarnessError without netem. */
  delay(index: number, ms: number, jitterMs = 0): void {
    const n = this.node(index);
    for (const l of n.links) {
      const spec = ["delay", `${ms}ms`, ...(jitterMs > 0 ? [`${jitterMs}ms`] : [])];
      for (const [ns, dev] of [
        [this.switchNs, l.port],
        [n.ns, l.iface],
      ] as const) {
        const r = spawnSync(
          "tc",
          ["-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", ...spec],
          {
            encoding: "utf8",
          },
        );
        if (r.status !== 0) {
          throw new HarnessError(
            `tc netem failed (${r.stderr.trim()}): this kernel may lack CONFIG_NET_SCH_NETEM`,
          );
        }
      }
    }
  }

  /** Whether delay() can work on this kernel. */
  static netemAvailable(): boolean {
    try {
      const config = execFileSync("sh", ["-c", "zcat /proc/config.gz 2>/dev/null"], {
        encoding: "utf8",
      });
      if (config.includes("CONFIG_NET_SCH_NETEM=")) return true;
      if (config !== "") return false;
    } catch {}
    return existsSync("/sys/module/sch_netem") || tryModule("sch_netem");
  }

  /** Kills every process started here and removes every namespace. */
  async destroy(): Promise<void> {
    const running = [...this.processes];
    for (const p of running) p.kill("SIGKILL");
    await Promise.all(running.map((p) => Promise.race([p.exited, sleep(2000)])));
    this.destroySync();
  }

  private destroySync() {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off("exit", this.onExit);
    for (const p of this.processes) p.kill("SIGKILL");
    for (const n of this.nodes) removeNamespace(n.ns);
    // Nodes that failed halfway through creation are not in this.nodes.
    for (const ns of listNamespaces()) if (ns.startsWith(`${this.id}-n`)) removeNamespace(ns);
    removeNamespace(this.switchNs);
    const left = listNamespaces().filter((ns) => ns.startsWith(this.id));
    if (left.length > 0) throw new HarnessError(`namespaces left behind: ${left.join(" ")}`);
  }
}

function tryModule(name: string): boolean {
  return tryRun("modprobe", ["-q", name]);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type JsonLine = Record<string, unknown> & { t?: number };

/** A program running in a node namespace, talking JSON lines on stdin/stdout. */
export class NodeProcess {
  readonly lines: JsonLine[] = [];
  stderr = "";
  exit: Exit | undefined;
  readonly exited: Promise<Exit>;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    const rl = createInterface({ input: child.stdout! });
    rl.on("line", (line) => {
      let value: JsonLine;
      try {
        value = JSON.parse(line) as JsonLine;
      } catch {
        value = { text: line };
      }
      this.lines.push(value);
      for (const w of [...this.waiters]) w();
    });
    child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d.toString();
    });
    child.stdin?.on("error", () => {});
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        this.exit = { code, signal };
        for (const w of [...this.waiters]) w();
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** Writes one JSON line to the program's stdin. */
  send(value: unknown): void {
    this.child.stdin?.write(`${JSON.stringify(value)}\n`);
  }

  kill(signal: NodeJS.Signals = "SIGTERM"): void {
    if (this.exit) return;
    try {
      this.child.kill(signal);
    } catch {}
  }

  /** The first line (from `from` on) that satisfies `match`; fails after timeoutMs. */
  async waitFor(
    what: string,
    match: (line: JsonLine) => boolean,
    timeoutMs = 10_000,
    from = 0,
  ): Promise<JsonLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.slice(from).find(match);
      if (found) return found;
      if (this.exit)
        throw new HarnessError(
          `${this.name} exited (${JSON.stringify(this.exit)}) before ${what}\n${this.stderr}`,
        );
      const left = deadline - Date.now();
      if (left <= 0)
        throw new HarnessError(
          `${this.name}: timed out after ${timeoutMs} ms waiting for ${what}\n${this.stderr}`,
        );
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.waiters.add(done);
      });
    }
  }

  /** Sends a request line and waits for the next line answering it (`reply` field). */
  async request(cmd: Record<string, unknown>, timeoutMs = 5000): Promise<JsonLine> {
    const id = Math.random().toString(36).slice(2);
    const from = this.lines.length;
    this.send({ ...cmd, id });
    return this.waitFor(`reply to ${String(cmd.cmd)}`, (l) => l.reply === id, timeoutMs, from);
  }

  /** Every JSON line so far with event `ev`. */
  events(ev: string): JsonLine[] {
    return this.lines.filter((l) => l.ev === ev);
  }
}

/** Reads /proc to say whether a process still runs (tests of kill -9). */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}
