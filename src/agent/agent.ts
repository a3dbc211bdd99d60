import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { type IncomingMessage, request } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Cgroup } from "../cgroups/index.js";
import { type AppRecord, onInstanceFailure } from "../controller/index.js";
// Not ../vmm/index.js: that loads koffi and the KVM bindings into the grid service.
import { FENCED_EXIT, VMM_NODE_FLAGS } from "../vmm/process-contract.js";
import { planNetworks } from "./app-network.js";
import { ClassImages, type ImagePeers } from "./class-images.js";
import { type InstancePlan, planInstance } from "./instance-plan.js";
import { NetworkApplier } from "./network-applier.js";
import {
  type ConsoleChunk,
  readConsole,
  rotateConsole,
  type VmExit,
  VmProcess,
  type VmState,
} from "./vm-process.js";
import { ensureVolume } from "./volumes.js";

/**
 * The agent of a node: runs the instances the controller placed here, one `flatgrid vmm`
 * process each, and says how they are. Level-based: every call of reconcile() gets the whole
 * list of what should run here and converges to it, so the grid service can restart at any
 * time (it adopts the VMMs that still run).
 *
 * Fencing: the VMMs stop their VM once the node's lease file is older than `leaseMs`. The
 * grid service renews it only after it reached a quorum of the grid, so a node cut off (or a
 * hung grid service) stops its VMs by itself, before the controller's grace for that node
 * runs out and the instances are placed elsewhere. No instance runs twice.
 */

export class AgentError extends Error {
  constructor(
    message: string,
    /** not-here: this node does not run it; not-running: no VM of it runs now. */
    readonly code: "not-here" | "not-running",
  ) {
    super(message);
    this.name = "AgentError";
  }
}

export type InstanceState =
  | "preparing"
  | "starting"
  | "booting"
  | "running"
  | "restarting"
  | "failed"
  | "fenced"
  | "stopping"
  | "stopped";

/** An instance as this node sees it, published in its registry record. */
export interface ObservedInstance {
  app: string;
  instance: string;
  state: InstanceState;
  /** When it entered this state (ISO time). */
  since: string;
  /** Why, in words: the last end of its VM, a missing class image, an alert. */
  detail: string;
  pid: number | null;
  /** Ends of its VM that were not asked for, in the last 24 hours. */
  failures: number;
  /** What it used, sampled every few seconds while its VM runs. */
  metrics: InstanceMetrics | null;
}

/** An instance's use of its node, from its control group, its VMM and its tap. */
export interface InstanceMetrics {
  /** CPU over the last sample, percent of one CPU (200 = two CPUs busy). */
  cpuPercent: number;
  /** Memory charged to its control group (guest RAM it touched, the VMM's own), MiB. */
  memoryMiB: number;
  /** Its control group's memory limit, MiB. */
  memoryLimitMiB: number;
  /** Out-of-memory kills in its control group since it was made. */
  oomKills: number;
  /** Since its VM started: what the guest read and wrote on its disks. */
  diskReadBytes: number;
  diskWriteBytes: number;
  /** Since its NIC was made: what the guest received and sent. */
  netRxBytes: number;
  netTxBytes: number;
  /** When this was sampled (ISO time). */
  at: string;
}

/** What the controller placed on this node: the application and the instance's id. */
export interface DesiredInstance {
  app: AppRecord;
  instance: string;
}

export interface AgentOptions {
  /** Where instance directories (vm.json, console.log, vmm.pid) and the lease live. */
  dir: string;
  /** The appliance catalog on this node (see ClassImages). */
  images: string;
  /** Where class images from peers go (on the data partition), and how to ask peers. */
  imageCache?: string;
  imagePeers?: ImagePeers;
  /** How stale the lease may get before the VMMs stop their VMs. */
  leaseMs: number;
  /** How the CLI is run, for `vmm`: this checkout's by default. */
  command?: string[];
  /** SIGTERM, then SIGKILL after this long. */
  stopGraceMs?: number;
  /**
   * How long a guest may take from its monitor's start to its ready line. One that has not
   * said it by then is stuck (a kernel that hangs in its boot looks alive: its vCPU runs):
   * its VM is stopped, and that counts as a failure like a crash (DEFAULT_BOOT_DEADLINE_MS).
   */
  bootDeadlineMs?: number;
  /**
   * Application networks (bridge, VXLAN from `self`, nftables): each instance gets a NIC on
   * its application's segment. Without it, instances have no NIC.
   */
  network?: { self: string };
  /**
   * The control group below which each VMM runs, in `<parent>/<app>/<instance>` with its
   * CPU and memory limits (flatgrid by default; the cluster tests give each node its own).
   */
  cgroupParent?: string;
  log?: (level: "info" | "warn" | "error", msg: string) => void;
}

interface Managed {
  key: string;
  app: string;
  instance: string;
  dir: string;
  state: InstanceState;
  since: number;
  detail: string;
  vm: VmProcess | null;
  /** vm.json as written: a different one means the VM must be started again. */
  config: string | null;
  failures: number[];
  restartAt: number | null;
  /** No longer wanted here: stop it and forget it. */
  removing: boolean;
  busy: boolean;
  metrics: InstanceMetrics | null;
  /**
   * The operator's restart count (AppRecord.restarts) its VM was started at, kept in the
   * instance's directory; null until its first start here.
   */
  generation: number | null;
  /** The control group's CPU time at the last sample, to compute the next one's percent. */
  lastCpu: { usec: number; at: number } | null;
  /** Time of the last failed class check, to retry without hammering the disk. */
  preparedAt: number;
  /** Time of the last look at a running VMM (its state, its memory, its configuration). */
  checkedAt: number;
  /** When its current VMM was started (for the boot deadline). */
  launchedAt: number;
  /** Why the agent itself stopped its VM, when that is a failure: said in place of the exit. */
  failedBecause: string | null;
}

/**
 * A Linux microVM reaches its init in well under a second on a server; 30 s covers a loaded
 * node and a slow disk many times over. Emulated nodes stretch it (the grid's timescale).
 */
export const DEFAULT_BOOT_DEADLINE_MS = 30_000;

const DEFAULT_COMMAND = [
  process.execPath,
  ...VMM_NODE_FLAGS,
  fileURLToPath(new URL("../cli/main.js", import.meta.url)),
];
const RETRY_PREPARE_MS = 10_000;
/** All VMs together against one of the node's processes (100), when both want the CPU. */
export const VM_CPU_WEIGHT = 10;
/** In the instance's directory: its data volume (see volumes.ts). */
const VOLUME_FILE = "volume.ext4";
const CHECK_RUNNING_MS = 3000;
/** Metrics go into the registry record, which is written when it changes: not too often. */
const SAMPLE_MS = 10_000;

function vmConfig(plan: InstancePlan, nic: boolean, volume: string): string {
  return `${JSON.stringify(
    {
      memoryMiB: plan.memoryMiB,
      vcpus: plan.vcpus,
      kernel: plan.parts.kernel,
      ...(plan.parts.initrd ? { initrd: plan.parts.initrd } : {}),
      cmdline: plan.cmdline,
      // The class's root disk, shared by its instances and never written; then the
      // instance's own data volume, when it has one.
      disks: [
        { path: plan.parts.rootfs, readOnly: true },
        ...(plan.volumeMiB > 0 ? [{ path: volume, readOnly: false }] : []),
      ],
      nics: nic ? [{ tap: plan.tap, mac: plan.mac }] : [],
    },
    null,
    2,
  )}\n`;
}

function tapCounter(tap: string, counter: "rx_bytes" | "tx_bytes"): number {
  try {
    return Number(readFileSync(`/sys/class/net/${tap}/statistics/${counter}`, "utf8").trim());
  } catch {
    return 0;
  }
}

export class Agent {
  /** The class images this node holds or fetches; its peers fetch from them too. */
  readonly images: ClassImages;
  private readonly managed = new Map<string, Managed>();
  readonly leaseFile: string;
  private readonly log: NonNullable<AgentOptions["log"]>;
  private readonly networks: NetworkApplier | null;

  constructor(private readonly o: AgentOptions) {
    this.images = new ClassImages(
      o.images,
      o.imageCache ?? null,
      o.imagePeers ?? null,
      (level, msg) => o.log?.(level, `class images: ${msg}`),
    );
    this.leaseFile = join(o.dir, "lease");
    this.log = o.log ?? (() => {});
    this.networks = o.network ? new NetworkApplier(o.network.self, this.log) : null;
    mkdirSync(o.dir, { recursive: true });
    this.yieldToTheNode();
    this.adoptAll();
  }

  /**
   * Guests get the CPU time the node does not use, not the node's share: the group that
   * holds every VM weighs VM_CPU_WEIGHT against the node's own processes (weight 100 each).
   * The grid service and etcd must answer within their leases whatever the guests do: a
   * node whose grid service misses them fences itself and stops every VM it runs. Each VM
   * still has its own cpu.max, and an idle node leaves the guests all they may use.
   */
  private yieldToTheNode(): void {
    const parent = this.o.cgroupParent ?? "flatgrid";
    try {
      new Cgroup(parent).setCpuWeight(VM_CPU_WEIGHT);
    } catch (err) {
      this.log(
        "warn",
        `VMs' control group ${parent}: no CPU weight set: ${(err as Error).message}`,
      );
    }
  }

  private instanceDir(app: string, instance: string): string {
    return join(this.o.dir, app, instance);
  }

  private newManaged(app: string, instance: string): Managed {
    const dir = this.instanceDir(app, instance);
    let failures: number[] = [];
    try {
      failures = JSON.parse(readFileSync(join(dir, "failures.json"), "utf8")) as number[];
    } catch {
      // None yet.
    }
    let generation: number | null = null;
    try {
      generation = Number(readFileSync(join(dir, "restarts"), "utf8").trim());
      if (!Number.isInteger(generation)) generation = null;
    } catch {
      // Not started here yet.
    }
    return {
      key: `${app}/${instance}`,
      app,
      instance,
      dir,
      state: "preparing",
      since: Date.now(),
      detail: "",
      vm: null,
      config: null,
      failures,
      restartAt: null,
      removing: false,
      busy: false,
      metrics: null,
      generation,
      lastCpu: null,
      preparedAt: 0,
      checkedAt: 0,
      // An adopted VMM's boot is timed from its adoption: its start is not known here.
      launchedAt: Date.now(),
      failedBecause: null,
    };
  }

  /** VMMs a previous grid service started on this node, still running. */
  private adoptAll(): void {
    for (const app of readdirSync(this.o.dir, { withFileTypes: true })) {
      if (!app.isDirectory()) continue;
      for (const inst of readdirSync(join(this.o.dir, app.name), { withFileTypes: true })) {
        if (!inst.isDirectory()) continue;
        const m = this.newManaged(app.name, inst.name);
        const vm = this.vmProcess(m);
        if (vm.adopt()) {
          m.vm = vm;
          m.config = existsSync(vm.config) ? readFileSync(vm.config, "utf8") : null;
          this.setState(m, "starting", `adopted VMM pid ${vm.pid}`);
          this.watch(m, vm);
        } else {
          m.removing = true;
        }
        this.managed.set(m.key, m);
      }
    }
  }

  private vmProcess(m: Managed): VmProcess {
    return new VmProcess({
      dir: m.dir,
      command: this.o.command ?? DEFAULT_COMMAND,
      lease: { file: this.leaseFile, maxAgeMs: this.o.leaseMs },
      cgroup: this.cgroupPath(m),
    });
  }

  private cgroupPath(m: Managed): string {
    return `${this.o.cgroupParent ?? "flatgrid"}/${m.app}/${m.instance}`;
  }

  /** The instance's control group, or null when this machine has none to read. */
  private cgroup(m: Managed): Cgroup | null {
    try {
      return new Cgroup(this.cgroupPath(m));
    } catch {
      return null;
    }
  }

  private setState(m: Managed, state: InstanceState, detail: string): void {
    if (m.state !== state || m.detail !== detail) {
      if (m.state !== state)
        this.log(
          state === "failed" ? "error" : "info",
          `${m.key}: ${state}${detail ? ` (${detail})` : ""}`,
        );
      m.state = state;
      m.detail = detail;
      m.since = Date.now();
    }
  }

  /** When the last proof of membership was asked for. */
  private provenAt = 0;

  get leaseMs(): number {
    return this.o.leaseMs;
  }

  /**
   * The node reached a quorum of its grid with a read sent at `provenAt`: its VMs may run
   * until leaseMs after that moment (not after now: the tick may have stalled since).
   */
  renewLease(provenAt: number): void {
    this.provenAt = Math.max(this.provenAt, provenAt);
    const at = new Date(provenAt);
    try {
      if (statSync(this.leaseFile).mtimeMs >= provenAt) return;
    } catch {
      writeFileSync(this.leaseFile, "");
    }
    utimesSync(this.leaseFile, at, at);
  }

  /**
   * Converges to `desired`, everything the controller placed on this node; `where` says on
   * which node (underlay address) every instance of the grid is, for the networks. Returns
   * at once.
   */
  reconcile(
    desired: readonly DesiredInstance[],
    where: ReadonlyMap<string, string> = new Map(),
  ): void {
    if (this.networks && this.o.network) {
      const apps = [...new Map(desired.map((d) => [d.app.name, d.app])).values()];
      void this.networks.apply(planNetworks(this.o.network.self, apps, where));
    }
    const wanted = new Map(desired.map((d) => [`${d.app.name}/${d.instance}`, d]));
    for (const [key, d] of wanted) {
      let m = this.managed.get(key);
      if (!m || m.removing) {
        if (m?.busy) continue; // Still stopping the old one.
        m = this.newManaged(d.app.name, d.instance);
        this.managed.set(key, m);
      }
      this.step(m, d);
    }
    for (const m of this.managed.values()) {
      if (wanted.has(m.key) && !m.removing) continue;
      m.removing = true;
      this.step(m, null);
    }
    for (const m of this.managed.values()) m.vm?.poll();
  }

  private step(m: Managed, d: DesiredInstance | null): void {
    if (m.busy) return;
    const run = (work: () => Promise<void>) => {
      m.busy = true;
      void work()
        .catch((err: Error) => this.log("error", `${m.key}: ${err.message}`))
        .finally(() => {
          m.busy = false;
        });
    };
    if (!d) {
      run(() => this.remove(m));
      return;
    }
    // The operator's word comes first: a restart asked for, a stop, a start.
    const generation = d.app.restarts?.[d.instance] ?? 0;
    m.generation ??= generation;
    if (generation !== m.generation) {
      run(() => this.restartAsked(m, generation));
      return;
    }
    if (d.app.stopped?.includes(d.instance)) {
      if (m.vm || m.state !== "stopped") run(() => this.stopAsked(m));
      return;
    }
    if (m.state === "stopped") {
      m.restartAt = null;
      this.setState(m, "preparing", "started again (`flatgrid app start`)");
    }
    if (m.state === "failed" && m.vm === null && m.restartAt === null) return;
    if (m.vm === null) {
      if (m.restartAt !== null && Date.now() < m.restartAt) return;
      if (m.state === "preparing" && m.preparedAt && Date.now() - m.preparedAt < RETRY_PREPARE_MS)
        return;
      run(() => this.launch(m, d));
      return;
    }
    // A starting or booting VM is looked at every tick, a running one every few seconds.
    const every = m.state === "running" ? CHECK_RUNNING_MS : 0;
    if (
      (m.state === "starting" || m.state === "booting" || m.state === "running") &&
      Date.now() - m.checkedAt >= every
    ) {
      m.checkedAt = Date.now();
      run(() => this.check(m, d));
    }
  }

  private async launch(m: Managed, d: DesiredInstance): Promise<void> {
    this.setState(m, "preparing", `checking the image of class ${this.classOf(d)}`);
    let config: string;
    let volumeMiB = 0;
    try {
      const plan = await this.plan(d);
      if (this.networks && !this.networks.ready(plan.tap)) {
        // The next apply makes it; try again at the next tick.
        this.setState(
          m,
          "preparing",
          `waiting for its network (tap ${plan.tap})${this.networks.lastError ? `: ${this.networks.lastError}` : ""}`,
        );
        return;
      }
      config = vmConfig(plan, this.networks !== null, join(m.dir, VOLUME_FILE));
      volumeMiB = plan.volumeMiB;
    } catch (err) {
      m.preparedAt = Date.now();
      this.setState(m, "preparing", (err as Error).message);
      return;
    }
    // Checking the image took a while: start only on a fresh proof that this node is in
    // the grid (what is placed here may have moved meanwhile); the next tick tries again.
    if (Date.now() - this.provenAt > this.o.leaseMs / 2) {
      this.setState(m, "preparing", "waiting for a fresh answer from the grid");
      return;
    }
    mkdirSync(m.dir, { recursive: true });
    if (volumeMiB > 0) {
      try {
        if ((await ensureVolume(join(m.dir, VOLUME_FILE), volumeMiB)) === "made")
          this.log("info", `${m.key}: made its data volume, ${volumeMiB} MiB`);
      } catch (err) {
        m.preparedAt = Date.now();
        this.setState(m, "preparing", (err as Error).message);
        return;
      }
    }
    writeFileSync(join(m.dir, "vm.json"), config);
    writeFileSync(join(m.dir, "restarts"), `${m.generation ?? 0}\n`);
    const vm = this.vmProcess(m);
    vm.start();
    m.vm = vm;
    m.config = config;
    m.restartAt = null;
    m.launchedAt = Date.now();
    m.failedBecause = null;
    this.setState(m, "starting", `VMM pid ${vm.pid}`);
    this.watch(m, vm);
  }

  private classOf(d: DesiredInstance): string {
    return d.app.spec.instances.find((i) => i.id === d.instance)?.class ?? "?";
  }

  /** The instance's VM, from its application and its class's checked parts. */
  private async plan(d: DesiredInstance): Promise<InstancePlan> {
    return planInstance(d.app, d.instance, await this.images.resolve(this.classOf(d)));
  }

  /** Running as it should? A VM whose configuration changed is started again. */
  private async check(m: Managed, d: DesiredInstance): Promise<void> {
    const vm = m.vm as VmProcess;
    if (rotateConsole(vm.log))
      this.log("info", `${m.key}: console.log cut (last part in console.log.1)`);
    const answer = await vm.state();
    if (answer?.state === "running") {
      // The first percent needs a second sample: that one comes at the next look.
      if (Date.now() - (m.lastCpu?.at ?? 0) >= (m.metrics ? SAMPLE_MS : CHECK_RUNNING_MS))
        this.sample(m, answer);
      if (m.state === "starting") this.setState(m, "booting", `VMM pid ${vm.pid}`);
      // Running means the guest said so: the guest init's last line before its service.
      if (m.state === "booting" && vm.guestReady())
        this.setState(m, "running", `VMM pid ${vm.pid}`);
    }
    const deadline = this.o.bootDeadlineMs ?? DEFAULT_BOOT_DEADLINE_MS;
    if (
      (m.state === "starting" || m.state === "booting") &&
      m.failedBecause === null &&
      Date.now() - m.launchedAt > deadline
    ) {
      // Still attached: its end comes through watch() and counts as a failure, with this
      // reason in place of the signal that ended it.
      m.failedBecause = `its guest did not say it was ready within ${Math.round(deadline / 1000)} s`;
      this.log("warn", `${m.key}: ${m.failedBecause}: stopping its VM`);
      await vm.stop(this.o.stopGraceMs ?? 10_000);
      return;
    }
    let config: string | null = null;
    try {
      config = vmConfig(await this.plan(d), this.networks !== null, join(m.dir, VOLUME_FILE));
    } catch {
      return; // Keep what runs: a catalog problem now does not stop a running VM.
    }
    if (m.config !== null && config !== m.config) {
      this.log("info", `${m.key}: its configuration changed: starting it again`);
      m.removing = false;
      m.restartAt = Date.now();
      await this.stopOnPurpose(m, "configuration changed");
    }
  }

  /** Stops the VM, if it runs, without counting that as a failure. */
  private async stopOnPurpose(m: Managed, why: string): Promise<void> {
    const vm = m.vm;
    if (!vm) return;
    // Detached first: its end is then not taken for a failure (see watch()).
    m.vm = null;
    m.metrics = null;
    m.lastCpu = null;
    this.setState(m, "stopping", why);
    await vm.stop(this.o.stopGraceMs ?? 10_000);
  }

  /** `flatgrid app restart`: start it again now, its failures forgotten. */
  private async restartAsked(m: Managed, generation: number): Promise<void> {
    m.generation = generation;
    m.failures = [];
    rmSync(join(m.dir, "failures.json"), { force: true });
    await this.stopOnPurpose(m, "restart asked for");
    m.restartAt = Date.now();
    this.setState(m, "restarting", "restart asked for (`flatgrid app restart`)");
  }

  /** `flatgrid app stop`: it keeps its node; its VM stops until `app start`. */
  private async stopAsked(m: Managed): Promise<void> {
    m.restartAt = null;
    await this.stopOnPurpose(m, "stop asked for");
    this.setState(m, "stopped", "stopped by `flatgrid app stop`");
  }

  /** Reads what the instance used: control group, the VMM's disk counters, its tap. */
  private sample(m: Managed, answer: VmState): void {
    const group = this.cgroup(m);
    if (!group) return;
    const now = Date.now();
    const use = group.usage();
    const prev = m.lastCpu;
    m.lastCpu = { usec: use.cpuUsec, at: now };
    if (!prev || now <= prev.at) return; // a percent needs two samples
    const tap = (() => {
      try {
        return (JSON.parse(m.config ?? "{}") as { nics?: { tap: string }[] }).nics?.[0]?.tap;
      } catch {
        return undefined;
      }
    })();
    const disks = answer.stats?.disks ?? [];
    // Whole units: the registry record is written again only when something in it changed.
    m.metrics = {
      cpuPercent: Math.max(
        0,
        Math.round(((use.cpuUsec - prev.usec) / ((now - prev.at) * 1000)) * 100),
      ),
      memoryMiB: Math.round(use.memoryBytes / 2 ** 20),
      memoryLimitMiB: Math.round(group.limits().memoryBytes / 2 ** 20),
      oomKills: use.oomKills,
      diskReadBytes: disks.reduce((n, d) => n + d.bytesRead, 0),
      diskWriteBytes: disks.reduce((n, d) => n + d.bytesWritten, 0),
      // The tap's receive side is what the guest sent, and the other way round.
      netRxBytes: tap ? tapCounter(tap, "tx_bytes") : 0,
      netTxBytes: tap ? tapCounter(tap, "rx_bytes") : 0,
      at: new Date(now).toISOString(),
    };
  }

  private watch(m: Managed, vm: VmProcess): void {
    void vm.done.then(() => {
      if (m.vm !== vm) return; // Replaced on purpose (configuration change).
      m.vm = null;
      m.metrics = null;
      m.lastCpu = null;
      this.ended(m, vm.exit as VmExit);
    });
  }

  private ended(m: Managed, exit: VmExit): void {
    const how =
      m.failedBecause ||
      exit.last ||
      (exit.signal
        ? `killed by ${exit.signal}`
        : exit.code === null
          ? "ended"
          : `exit code ${exit.code}`);
    if (m.removing) return;
    if (exit.code === FENCED_EXIT || /(^|; )fenced:/.test(exit.last)) {
      // Not the guest's fault: it runs again once this node is back in the grid.
      this.setState(m, "fenced", how);
      return;
    }
    const now = Date.now();
    m.failures = [...m.failures.filter((t) => now - t < 24 * 3600_000), now];
    try {
      writeFileSync(join(m.dir, "failures.json"), JSON.stringify(m.failures));
    } catch {
      // The directory went away: nothing to keep.
    }
    const decision = onInstanceFailure(m.key, m.failures, now);
    if (decision.action === "give-up") {
      m.restartAt = null;
      this.setState(m, "failed", `${how}; ${decision.alert}`);
      return;
    }
    m.restartAt = decision.atMs;
    this.setState(
      m,
      "restarting",
      `${how}; starting again in ${Math.max(0, Math.round((decision.atMs - now) / 1000))} s (failure ${m.failures.length} of 3 in 24 h)`,
    );
  }

  private async remove(m: Managed): Promise<void> {
    if (m.vm) {
      this.setState(m, "stopping", "no longer placed on this node");
      await m.vm.stop(this.o.stopGraceMs ?? 10_000);
      m.vm = null;
    }
    rmSync(m.dir, { recursive: true, force: true });
    // Its control group goes too, once the killed VMM has left it.
    const group = this.cgroup(m);
    const keep = (this.o.cgroupParent ?? "flatgrid").split("/").length;
    for (let i = 0; group && !group.remove(keep) && i < 20; i++)
      await new Promise((r) => setTimeout(r, 100));
    try {
      // The application's directory goes with its last instance here.
      const appDir = join(this.o.dir, m.app);
      if (readdirSync(appDir).length === 0) rmSync(appDir, { recursive: true, force: true });
    } catch {
      // Gone already.
    }
    if (this.managed.get(m.key) === m) this.managed.delete(m.key);
  }

  /** A piece of the console log of an instance this node runs (see readConsole). */
  consoleLog(app: string, instance: string, from: number | null, max: number): ConsoleChunk {
    const m = this.managed.get(`${app}/${instance}`);
    if (!m || (m.removing && m.vm === null))
      throw new AgentError(`${app}/${instance} does not run on this node`, "not-here");
    return readConsole(join(m.dir, "console.log"), from, max);
  }

  /** The control socket of the VMM that runs an instance here now. */
  private vmmSocket(app: string, instance: string): string {
    const m = this.managed.get(`${app}/${instance}`);
    if (!m || (m.removing && m.vm === null))
      throw new AgentError(`${app}/${instance} does not run on this node`, "not-here");
    if (!m.vm)
      throw new AgentError(
        `${app}/${instance} has no VM running now (${m.state}${m.detail ? `: ${m.detail}` : ""})`,
        "not-running",
      );
    return m.vm.socket;
  }

  /** A request to the VMM of an instance here; an unreachable VMM is an AgentError. */
  private vmmRequest(
    app: string,
    instance: string,
    method: "GET" | "POST",
    path: string,
    body?: Buffer,
  ): Promise<IncomingMessage> {
    const socketPath = this.vmmSocket(app, instance);
    return new Promise((resolve, reject) => {
      const req = request({ socketPath, path, method }, resolve);
      req.on("error", (err) =>
        reject(
          new AgentError(
            `${app}/${instance}: its VMM does not answer: ${err.message}`,
            "not-running",
          ),
        ),
      );
      req.end(body);
    });
  }

  /**
   * An instance's live console: what its VM kept of its console, then whatever the guest
   * writes, until the VM ends (the stream ends) or the reader lets go (destroy it).
   */
  async consoleFollow(app: string, instance: string): Promise<IncomingMessage> {
    const res = await this.vmmRequest(app, instance, "GET", "/v1/console?follow=1");
    if (res.statusCode === 200) return res;
    res.resume();
    throw new AgentError(
      `${app}/${instance}: its VMM answered HTTP ${res.statusCode}`,
      "not-running",
    );
  }

  /** Types `bytes` at an instance's console; resolves with how many its VMM queued. */
  async consoleType(app: string, instance: string, bytes: Buffer): Promise<number> {
    const res = await this.vmmRequest(app, instance, "POST", "/v1/console", bytes);
    let answer = "";
    res.setEncoding("utf8");
    for await (const chunk of res) answer += chunk;
    if (res.statusCode === 202) return bytes.length;
    throw new AgentError(
      `${app}/${instance}: its VMM refused the input: ${answer.trim()}`,
      "not-running",
    );
  }

  observed(): ObservedInstance[] {
    const now = Date.now();
    return [...this.managed.values()]
      .filter((m) => !(m.removing && m.vm === null))
      .map((m) => ({
        app: m.app,
        instance: m.instance,
        state: m.state,
        since: new Date(m.since).toISOString(),
        detail: m.detail,
        pid: m.vm?.pid ?? null,
        failures: m.failures.filter((t) => now - t < 24 * 3600_000).length,
        metrics: m.metrics,
      }))
      .sort((a, b) =>
        a.app === b.app ? (a.instance < b.instance ? -1 : 1) : a.app < b.app ? -1 : 1,
      );
  }

  /** The grid service stops: the VMs keep running on the lease, for the next one to adopt. */
  async close(): Promise<void> {}
}
