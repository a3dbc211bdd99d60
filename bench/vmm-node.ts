/**
 * The half of `npm run bench -- vmm` that runs on the simulated node: starts microVMs under
 * our monitor (`flatgrid vmm`) and under QEMU (`-M microvm -enable-kvm`) with the same kernel,
 * initrd, disk file and taps, and measures them alike from outside: wall time from the
 * monitor's spawn to the guest's boot marker, resident memory from /proc/PID/smaps without the
 * guest RAM mapping, and what guestbench says from inside. Prints one `fgbench-result {json}`
 * line per command for bench/vmm.ts to parse.
 *
 * It is copied onto the node's assets disk next to what it starts, and runs on the node's own
 * Node.js: it imports node: built-ins only.
 *   node vmm-node.mjs setup             the disk file, a bridge and two taps
 *   node vmm-node.mjs pause-services    stops the node's grid service, etcd and console
 *   node vmm-node.mjs resume-services   lets them go on
 *   node vmm-node.mjs settle            waits until the node's CPU is quiet
 *   node vmm-node.mjs boot KIND         one VM to its boot marker
 *   node vmm-node.mjs pair KIND         a VM that tests its disk and receives, one that sends
 * KIND: flatgrid (vhost-net where the node has it), flatgrid-userspace-net, qemu; and
 * flatgrid-pvh, qemu-pvh: the same kernel unpacked (vmlinux), which both boot through PVH.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  appendFileSync,
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ASSETS = dirname(fileURLToPath(import.meta.url));
const WORK = "/tmp/fgbench";
const DISK = join(WORK, "disk.img");
const DISK_MIB = 128;
const MEMORY_MIB = 256;
// Not named fg*: the node's agent removes links of that name that no application of its wants.
const BRIDGE = "vbench0";
const TAPS = ["vbt0", "vbt1"];
const SERVER_IP = "10.78.0.2";
const CLIENT_IP = "10.78.0.3";
const NET_PORT = 5001;
/** Seconds of each disk pattern and of the network transfer, inside the guest. */
const SECONDS = Number(process.env.FGBENCH_SECONDS ?? 5);
/** Nested guests on an emulated node boot in tens of seconds; give them room. */
const STEP_TIMEOUT_MS = 300_000;
const STOP_GRACE_MS = 30_000;
/** What a VM's console may say before its lines are cut and the oldest dropped. */
const MAX_LINE = 64 * 1024;
const MAX_LINES = 20_000;

const KINDS = ["flatgrid", "flatgrid-userspace-net", "qemu", "flatgrid-pvh", "qemu-pvh"] as const;
type Kind = (typeof KINDS)[number];

interface VmSpec {
  kind: Kind;
  name: string;
  /** The guest's role, read by its /init from the command line. */
  role: "boot" | "server" | "client";
  disk?: boolean;
  tap?: string;
  ip?: string;
}

function cmdline(spec: VmSpec): string {
  // FGBENCH_VERBOSE=1: the guest kernel's messages, timed, in each VM's console file.
  const quiet = process.env.FGBENCH_VERBOSE === "1" ? "printk.time=1" : "quiet";
  const words = [`console=ttyS0 ${quiet} fgb.role=${spec.role} fgb.secs=${SECONDS}`];
  if (spec.ip) words.push(`fgb.ip=${spec.ip}`, `fgb.peer=${SERVER_IP}`, `fgb.port=${NET_PORT}`);
  return words.join(" ");
}

function mac(tap: string): string {
  return `02:00:0a:4e:00:${(TAPS.indexOf(tap) + 2).toString(16).padStart(2, "0")}`;
}

function argv(spec: VmSpec): { file: string; args: string[] } {
  const kernel = join(ASSETS, spec.kind.endsWith("-pvh") ? "vmlinux" : "vmlinuz");
  const initrd = join(ASSETS, "initrd.img");
  if (spec.kind.startsWith("qemu")) {
    const q = join(ASSETS, "qemu");
    const args = [
      "--library-path",
      join(q, "lib"),
      join(q, "qemu-system-x86_64"),
      ...["-L", join(q, "share"), "-M", "microvm", "-enable-kvm", "-cpu", "host"],
      ...["-m", String(MEMORY_MIB), "-smp", "1", "-nodefaults", "-no-user-config"],
      ...["-display", "none", "-no-reboot", "-serial", "stdio"],
      ...["-kernel", kernel, "-initrd", initrd, "-append", cmdline(spec)],
    ];
    if (spec.disk)
      args.push(
        ...["-drive", `id=d0,file=${DISK},format=raw,if=none`],
        ...["-device", "virtio-blk-device,drive=d0"],
      );
    if (spec.tap)
      args.push(
        ...["-netdev", `tap,id=n0,ifname=${spec.tap},script=no,downscript=no,vhost=on`],
        ...["-device", `virtio-net-device,netdev=n0,mac=${mac(spec.tap)}`],
      );
    return { file: join(q, "ld-linux-x86-64.so.2"), args };
  }
  const config = join(WORK, `${spec.name}.json`);
  const vm = {
    memoryMiB: MEMORY_MIB,
    vcpus: 1,
    kernel,
    initrd,
    cmdline: cmdline(spec),
    disks: spec.disk ? [{ path: DISK }] : [],
    nics: spec.tap
      ? [{ tap: spec.tap, mac: mac(spec.tap), vhost: spec.kind !== "flatgrid-userspace-net" }]
      : [],
    rng: false,
  };
  const fd = openSync(config, "w");
  writeSync(fd, JSON.stringify(vm));
  closeSync(fd);
  return { file: "flatgrid", args: ["vmm", "--config", config] };
}

const INIT = /^fgbench: init/;
/** The guest gave up (its init says done or error), or the monitor went. */
const ENDED = /^(vm-exit |fgbench: (done|error))/;

/** A started VM: its console lines as they come, and when each marker was first seen. */
class Running {
  readonly child: ChildProcess;
  readonly startedAt = performance.now();
  readonly lines: string[] = [];
  private partial = "";
  private waiters: {
    pattern: RegExp;
    resolve: (line: string) => void;
    fail: (why: string) => void;
  }[] = [];
  exited = false;

  private readonly consoleFile: string;

  constructor(readonly spec: VmSpec) {
    this.consoleFile = join(WORK, `${spec.name}.console`);
    writeFileSync(this.consoleFile, "");
    const { file, args } = argv(spec);
    this.child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
    log(
      `${(performance.now() / 1000).toFixed(0)} s: ${spec.kind} ${spec.name} is pid ${this.child.pid}`,
    );
    const take = (chunk: Buffer) => {
      const text = this.partial + chunk.toString("latin1");
      const parts = text.split(/\r?\n/);
      this.partial = parts.pop() ?? "";
      // A console that never ends its line (garbage, a flood of carriage returns) would make
      // every chunk cost more than the last: past MAX_LINE it is a line of its own.
      if (this.partial.length > MAX_LINE) {
        parts.push(this.partial);
        this.partial = "";
      }
      for (const line of parts) this.line(line);
    };
    this.child.stdout?.on("data", take);
    this.child.stderr?.on("data", take);
    this.child.once("exit", (code, signal) => {
      this.exited = true;
      this.line(`vm-exit ${code ?? signal}`);
    });
  }

  private line(line: string): void {
    // Each VM's console, with the node's time, in WORK/NAME.console (the last VM of a name).
    appendFileSync(
      this.consoleFile,
      `${(performance.now() - this.startedAt).toFixed(0)} ${line}\n`,
    );
    this.lines.push(
      line.length > MAX_LINE ? `${line.slice(0, 200)}... (${line.length} bytes)` : line,
    );
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES / 2);
    for (const w of [...this.waiters]) {
      const ended = ENDED.test(line);
      if (!ended && !w.pattern.test(line)) continue;
      this.waiters = this.waiters.filter((x) => x !== w);
      if (ended && !w.pattern.test(line)) w.fail("it ended");
      else w.resolve(line);
    }
  }

  /** The first line matching, now or later; fails when the VM ends or time runs out. */
  wait(pattern: RegExp, what: string): Promise<string> {
    const seen = this.lines.find((l) => pattern.test(l));
    if (seen) return Promise.resolve(seen);
    if (this.lines.some((l) => ENDED.test(l)))
      return Promise.reject(this.error(`no ${what}: it ended`));
    return new Promise((resolve, reject) => {
      const waiter = {
        pattern,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
        fail: (why: string) => {
          clearTimeout(timer);
          reject(this.error(`no ${what}: ${why}`));
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== waiter);
        waiter.fail(`not within ${STEP_TIMEOUT_MS / 1000} s`);
      }, STEP_TIMEOUT_MS);
      this.waiters.push(waiter);
    });
  }

  private error(why: string): Error {
    return new Error(
      `${this.spec.kind} ${this.spec.name}: ${why}; its last lines:\n${this.lines.slice(-25).join("\n")}\nthe node's busiest processes:\n${busiest()}\nits busiest threads, 5 s at a time:\n${sampler?.report() ?? ""}`,
    );
  }

  /**
   * Resident KiB of the monitor process, and of the guest RAM mapping within it; and how much
   * of that is in transparent huge pages (what the nested guest's memory is mapped with).
   */
  memory(): { rssKiB: number; guestKiB: number; vmmKiB: number; guestHugeKiB: number } {
    const pid = this.child.pid;
    let rss = 0;
    let guest = 0;
    let guestHuge = 0;
    let size = 0;
    let anonymous = false;
    // Guest RAM is the one anonymous mapping exactly the guest's size, in QEMU as in ours.
    for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
      const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
      if (head) {
        size = (Number.parseInt(head[2] ?? "0", 16) - Number.parseInt(head[1] ?? "0", 16)) / 1024;
        anonymous = (head[3] ?? "") === "";
        continue;
      }
      const isGuest = anonymous && size === MEMORY_MIB * 1024;
      const huge = /^AnonHugePages:\s+(\d+) kB/.exec(line);
      if (huge && isGuest) guestHuge += Number(huge[1]);
      const r = /^Rss:\s+(\d+) kB/.exec(line);
      if (!r) continue;
      const kib = Number(r[1]);
      rss += kib;
      if (isGuest) guest += kib;
    }
    return { rssKiB: rss, guestKiB: guest, vmmKiB: rss - guest, guestHugeKiB: guestHuge };
  }

  /**
   * SIGTERM first, so that a monitor run under a profiler (node --cpu-prof through a PATH
   * wrapper) writes its profile; SIGKILL if it is still there after STOP_GRACE_MS.
   */
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), STOP_GRACE_MS);
    await gone;
    clearTimeout(timer);
  }

  /** The guest's key=value pairs on the first line matching. */
  static fields(line: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const m of line.matchAll(/(\w[\w-]*)=("[^"]*"|\S+)/g))
      out[m[1] ?? ""] = (m[2] ?? "").replace(/^"|"$/g, "");
    return out;
  }
}

/** Clock ticks a second in /proc's CPU times (USER_HZ, 100 on every Linux we run on). */
const USER_HZ = 100;
const SAMPLE_MS = 5000;
/** Windows kept for an error's report: the last minute. */
const SAMPLES_KEPT = 12;

/** Every thread on the node with its CPU ticks so far: "pid/tid comm" -> ticks. */
function threadTicks(): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // ended meanwhile
    }
    for (const tid of tids) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
        const close = stat.lastIndexOf(")");
        const comm = stat.slice(stat.indexOf("(") + 1, close);
        // After ") ": state, ppid, ... utime and stime are the 12th and 13th.
        const f = stat.slice(close + 2).split(" ");
        ticks.set(`${pid}/${tid} ${comm}`, Number(f[11]) + Number(f[12]));
      } catch {
        // ended meanwhile
      }
    }
  }
  return ticks;
}

/** The busiest threads between two snapshots, as "37% 1234/1240 fg-vcpu0"; a thread born between them counts from zero. */
function busiestThreads(before: Map<string, number>, after: Map<string, number>, ms: number) {
  return [...after]
    .map(([thread, t]) => ({ thread, ticks: t - (before.get(thread) ?? 0) }))
    .filter((x) => x.ticks > 0)
    .sort((a, b) => b.ticks - a.ticks)
    .slice(0, 6)
    .map((x) => `${Math.round((x.ticks * 100_000) / (USER_HZ * ms))}% ${x.thread}`);
}

/**
 * Which threads of the node used its CPU, window by window, while a step ran: kept in
 * WORK/threads.log (with each VM's process id, logged at its start) and in a failed step's
 * error. Written to find what spins when a step that takes seconds takes minutes: the
 * monitor's threads carry names (fg-vcpuN, fg-disk-queues), QEMU's too.
 */
class ThreadSampler {
  private readonly startTicks = threadTicks();
  private readonly started = performance.now();
  private last = this.startTicks;
  private lastAt = this.started;
  private readonly recent: string[] = [];
  private readonly timer = setInterval(() => this.sample(), SAMPLE_MS);

  constructor() {
    this.timer.unref();
  }

  private sample(): void {
    const now = threadTicks();
    const at = performance.now();
    const line = `${(at / 1000).toFixed(0)} s: ${busiestThreads(this.last, now, at - this.lastAt).join(", ")}`;
    this.last = now;
    this.lastAt = at;
    this.recent.push(line);
    if (this.recent.length > SAMPLES_KEPT) this.recent.shift();
    log(line);
  }

  /** The last minute, window by window. */
  report(): string {
    return this.recent.join("\n");
  }

  /** The busiest threads over the whole step. */
  stop(): string[] {
    clearInterval(this.timer);
    return busiestThreads(this.startTicks, threadTicks(), performance.now() - this.started);
  }
}

function log(line: string): void {
  appendFileSync(join(WORK, "threads.log"), `${line}\n`);
}

let sampler: ThreadSampler | null = null;

/** `top`'s first lines: what else the node was doing when a step failed. */
function busiest(): string {
  try {
    return execFileSync("top", ["-b", "-n", "1"], { encoding: "utf8", timeout: 10_000 })
      .split("\n")
      .slice(0, 15)
      .map((l) => l.slice(0, 160))
      .join("\n");
  } catch (err) {
    return `(top failed: ${(err as Error).message})`;
  }
}

async function bootTo(spec: VmSpec): Promise<{ vm: Running; bootMs: number }> {
  const vm = new Running(spec);
  await vm.wait(INIT, "boot marker");
  return { vm, bootMs: Math.round(performance.now() - vm.startedAt) };
}

function result(value: unknown): void {
  process.stdout.write(`fgbench-result ${JSON.stringify(value)}\n`);
}

function sh(cmd: string): void {
  execFileSync("sh", ["-c", cmd], { stdio: ["ignore", "ignore", "inherit"] });
}

function setup(): void {
  rmSync(WORK, { recursive: true, force: true });
  sh(`mkdir -p ${WORK}`);
  // Written, not sparse: the reads find data in the file as on a disk in use.
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i++) block[i] = (i * 167 + 11) & 0xff;
  const fd = openSync(DISK, "w");
  for (let i = 0; i < DISK_MIB; i++) writeSync(fd, block);
  closeSync(fd);
  sh(
    [
      `ip link del ${BRIDGE} 2>/dev/null || true`,
      `ip link add ${BRIDGE} type bridge`,
      `ip link set ${BRIDGE} up`,
      ...TAPS.map(
        (t) =>
          `ip link del ${t} 2>/dev/null; ip tuntap add ${t} mode tap && ip link set ${t} master ${BRIDGE} && ip link set ${t} up`,
      ),
    ].join(" && "),
  );
  result({ setup: { disk: DISK, diskMiB: DISK_MIB, bridge: BRIDGE, taps: TAPS } });
}

/**
 * The node's CPU time so far, from /proc/stat: [idle (with iowait), total], in ticks. As
 * parseCpuLine in src/console/snapshot.ts reads it (this file imports built-ins only): the
 * first eight fields, guest time being inside user time already.
 */
function cpuTicks(): [number, number] {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  return [(fields[3] ?? 0) + (fields[4] ?? 0), fields.reduce((a, b) => a + b, 0)];
}

/**
 * The node's own services, which run beside what is measured and not for it: the grid
 * service, etcd and the full-screen console. On the simulator's one emulated CPU they took
 * from 5 to 30% of it while a VM was measured, more in the node's first minutes, and at
 * moments of their own: the same monitor measured twice on one node read 216 and 128 MB/s
 * sequentially. Stopped (SIGSTOP) while the bench measures, both monitors run on a node
 * with nothing else to do; the supervisor (PID 1's child) and the kernel go on.
 */
const SERVICES = [/\/dist\/src\/grid\/main\.js/, /^etcd /, /\/dist\/src\/cli\/main\.js console/];
const PAUSED = join(WORK, "paused.json");

function pauseServices(): void {
  const paused: { pid: number; command: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let command = "";
    try {
      command = readFileSync(`/proc/${entry}/cmdline`, "latin1").replace(/\0/g, " ").trim();
    } catch {
      continue; // Gone meanwhile.
    }
    if (!SERVICES.some((r) => r.test(command))) continue;
    process.kill(Number(entry), "SIGSTOP");
    paused.push({ pid: Number(entry), command: command.slice(0, 80) });
  }
  mkdirSync(WORK, { recursive: true });
  writeFileSync(PAUSED, JSON.stringify(paused));
  result({ paused });
}

function resumeServices(): void {
  let paused: { pid: number }[] = [];
  try {
    paused = JSON.parse(readFileSync(PAUSED, "utf8")) as { pid: number }[];
  } catch {
    // Nothing was paused.
  }
  for (const { pid } of paused) {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // Gone since.
    }
  }
  rmSync(PAUSED, { force: true });
  result({ resumed: paused.map((p) => p.pid) });
}

/**
 * Waits until the node is quiet: its CPU at least SETTLED_IDLE idle in two 2-second windows
 * in a row, or SETTLE_MAX_S seconds. A node that has just booted is still starting its
 * services, and a VM measured then (the first of a round on a fresh node) trailed the one
 * after it by half.
 */
const SETTLED_IDLE = 0.85;
const SETTLE_MAX_S = 120;
async function settle(): Promise<void> {
  const start = Date.now();
  let quiet = 0;
  let idle = 0;
  while (quiet < 2 && Date.now() - start < SETTLE_MAX_S * 1000) {
    const [i0, t0] = cpuTicks();
    await new Promise((r) => setTimeout(r, 2000));
    const [i1, t1] = cpuTicks();
    idle = t1 > t0 ? (i1 - i0) / (t1 - t0) : 0;
    quiet = idle >= SETTLED_IDLE ? quiet + 1 : 0;
  }
  result({ settle: { seconds: (Date.now() - start) / 1000, idle, settled: quiet >= 2 } });
}

async function boot(kind: Kind): Promise<void> {
  const { vm, bootMs } = await bootTo({ kind, name: "boot", role: "boot" });
  const memory = vm.memory();
  await vm.stop();
  result({ kind, bootMs, ...memory, threads: sampler?.stop() });
}

async function pair(kind: Kind): Promise<void> {
  const server = await bootTo({
    kind,
    name: "server",
    role: "server",
    disk: true,
    tap: TAPS[0],
    ip: SERVER_IP,
  });
  let client: Running | null = null;
  try {
    const blk: Record<string, Record<string, string>> = {};
    for (const test of ["warm-up", "seq-write", "seq-read", "rand-write", "rand-read"]) {
      const line = await server.vm.wait(new RegExp(`^fgbench: blk test=${test} `), test);
      blk[test] = Running.fields(line);
    }
    await server.vm.wait(/^fgbench: listening /, "listening server");
    // After its disk work: the monitor's buffers and queues have been used.
    const memory = server.vm.memory();
    const c = await bootTo({ kind, name: "client", role: "client", tap: TAPS[1], ip: CLIENT_IP });
    client = c.vm;
    // Either side's failure ends the wait (a client that cannot connect says so).
    const [recv, sent] = (
      await Promise.all([
        server.vm.wait(/^fgbench: net-recv /, "received bytes"),
        client.wait(/^fgbench: net-send /, "sent bytes"),
      ])
    ).map(Running.fields);
    const path = server.vm.lines.find((l) => /frames moved by/.test(l));
    result({
      kind,
      bootMs: server.bootMs,
      clientBootMs: c.bootMs,
      ...memory,
      blk,
      net: { recv, sent, path: path ?? null },
      threads: sampler?.stop(),
    });
  } finally {
    await server.vm.stop();
    await client?.stop();
  }
}

async function main(): Promise<void> {
  const [cmd, kind] = process.argv.slice(2);
  if (cmd === "setup") return setup();
  if (cmd === "settle") return settle();
  if (cmd === "pause-services") return pauseServices();
  if (cmd === "resume-services") return resumeServices();
  if ((cmd === "boot" || cmd === "pair") && KINDS.includes(kind as Kind)) {
    sampler = new ThreadSampler();
    return cmd === "boot" ? boot(kind as Kind) : pair(kind as Kind);
  }
  process.stderr.write(
    `usage: vmm-node.mjs setup | pause-services | resume-services | settle | boot KIND | pair KIND (${KINDS.join(", ")})\n`,
  );
  process.exitCode = 2;
}

main().catch((err: Error) => {
  result({ error: err.message });
  process.exitCode = 1;
});
