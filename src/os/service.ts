import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import type { PidFiles } from "./leftovers.js";
import { LineSplitter, LogBuffer, type LogStream, parseLogLine } from "./log-buffer.js";
import { formatMs, RestartTracker } from "./restart-policy.js";
import type { ServiceSpec } from "./service-spec.js";

export type ServiceState =
  /** Not running and not asked to: never started, or stopped by request. */
  | "stopped"
  /** Asked to run; waits for its dependencies to be ready. */
  | "waiting"
  /** Process started, readiness not yet seen. */
  | "starting"
  /** Ready. */
  | "running"
  | "stopping"
  /** Exited; a restart is scheduled. */
  | "backoff"
  /** Exited and, by its policy, stays so (a one-shot that finished). */
  | "exited"
  /** Failed too often: given up on until someone starts it again. */
  | "failed";

export interface ServiceStatus {
  name: string;
  description: string;
  state: ServiceState;
  pid: number | null;
  /** Restarts since the supervisor started it (automatic and manual). */
  restarts: number;
  /** Milliseconds since the current process started, when one runs. */
  uptimeMs: number | null;
  lastExit: { code: number | null; signal: string | null; at: number } | null;
  /** Why it is in this state, when that is not obvious: gave up, waiting for whom. */
  reason: string | null;
  dependsOn: string[];
  enabled: boolean;
}

const SUPERVISOR_NOTE = { stream: "supervisor" as LogStream, level: 30 };

/**
 * One service of the table and its process: spawns it in its own session (so that stopping
 * reaches its whole process group), keeps its output, probes readiness, and restarts it
 * according to its policy. Emits "state" on every change.
 */
export class Service extends EventEmitter {
  readonly logs: LogBuffer;
  private child: ChildProcess | null = null;
  private state: ServiceState = "stopped";
  private reason: string | null = null;
  private readonly tracker: RestartTracker;
  private restarts = 0;
  private startedAt = 0;
  private lastExit: ServiceStatus["lastExit"] = null;
  private backoffTimer: NodeJS.Timeout | null = null;
  private readyTimer: NodeJS.Timeout | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private readyPattern: RegExp | null = null;
  /** Resolved when the current process has exited; used by stop(). */
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly spec: ServiceSpec,
    private readonly baseEnv: NodeJS.ProcessEnv,
    private readonly pidFiles: PidFiles | null = null,
  ) {
    super();
    this.logs = new LogBuffer();
    this.tracker = new RestartTracker(spec.restart);
    if (spec.readiness.type === "log") this.readyPattern = new RegExp(spec.readiness.pattern);
  }

  get name(): string {
    return this.spec.name;
  }

  get currentState(): ServiceState {
    return this.state;
  }

  status(now = Date.now()): ServiceStatus {
    const pid = this.child?.pid ?? null;
    return {
      name: this.spec.name,
      description: this.spec.description,
      state: this.state,
      pid: this.isAlive() ? pid : null,
      restarts: this.restarts,
      uptimeMs: this.state === "running" || this.state === "starting" ? now - this.startedAt : null,
      lastExit: this.lastExit,
      reason: this.reason,
      dependsOn: this.spec.dependsOn,
      enabled: this.spec.enabled,
    };
  }

  private isAlive(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves once the service is no longer on its way up: running, or stopped or failed. */
  settled(timeoutMs: number): Promise<void> {
    const busy = () => ["waiting", "starting"].includes(this.state);
    if (!busy()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.off("state", check);
        resolve();
      };
      const check = () => {
        if (!busy()) done();
      };
      const timer = setTimeout(done, timeoutMs);
      this.on("state", check);
    });
  }

  note(msg: string, level = 30): void {
    this.logs.append({ ...SUPERVISOR_NOTE, level, msg });
  }

  /** Marks the service as wanted but blocked; the supervisor calls launch() when it may run. */
  wait(reason: string): void {
    if (this.state === "waiting" && this.reason === reason) return;
    this.setState("waiting", reason);
  }

  /** Starts the process now. Dependencies are the supervisor's business. */
  launch(): void {
    if (this.isAlive()) return;
    this.clearTimers();
    const [file, ...args] = this.spec.command;
    if (!file) throw new Error(`service ${this.name} has an empty command`);
    this.startedAt = Date.now();
    this.setState("starting", null);
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        cwd: this.spec.cwd,
        env: { ...this.baseEnv, ...this.spec.env, FLATGRID_SERVICE: this.name },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
    } catch (err) {
      this.onSpawnFailure(err as Error);
      return;
    }
    this.child = child;
    let resolveExited: () => void = () => {};
    this.exited = new Promise((resolve) => {
      resolveExited = resolve;
    });
    this.pipe(child, "stdout");
    this.pipe(child, "stderr");
    child.once("spawn", () => {
      if (child.pid) this.pidFiles?.write(this.name, child.pid);
      this.note(`started: pid ${child.pid} (${this.spec.command.join(" ")})`);
      this.beginReadiness();
    });
    child.once("error", (err) => {
      // A spawn failure (ENOENT, EACCES) emits no "exit": treat it as an exit here.
      if (child.pid === undefined) {
        this.onSpawnFailure(err);
        resolveExited();
      } else {
        this.note(`process error: ${err.message}`, 50);
      }
    });
    child.once("exit", (code, signal) => {
      this.pidFiles?.remove(this.name);
      resolveExited();
      this.onExit(code, signal);
    });
  }

  /** Stops the process: SIGTERM to its group, SIGKILL after the stop timeout. */
  async stop(reason = "stopped by request"): Promise<void> {
    this.clearTimers();
    const child = this.child;
    if (!child || !this.isAlive() || !child.pid) {
      this.child = null;
      this.setState("stopped", reason);
      return;
    }
    this.setState("stopping", reason);
    this.signalGroup(child, "SIGTERM");
    this.killTimer = setTimeout(() => {
      this.note(`did not stop within ${formatMs(this.spec.stopTimeoutMs)}: sending SIGKILL`, 40);
      this.signalGroup(child, "SIGKILL");
    }, this.spec.stopTimeoutMs);
    await this.exited;
    if (this.killTimer) clearTimeout(this.killTimer);
    this.killTimer = null;
    // Leftovers of its group (children that ignored SIGTERM) must not outlive the service.
    this.signalGroup(child, "SIGKILL");
  }

  /** A manual start: forgets past failures, as an operator asking again expects. */
  resetFailures(): void {
    this.tracker.reset();
  }

  countRestart(): void {
    this.restarts += 1;
  }

  private pipe(child: ChildProcess, stream: "stdout" | "stderr"): void {
    const source = child[stream];
    if (!source) return;
    source.setEncoding("utf8");
    const structured = this.spec.logFormat === "json";
    const splitter = new LineSplitter((line) => {
      if (line.length === 0) return;
      const entry = this.logs.append({
        ...parseLogLine(line, structured),
        stream,
        ...(child.pid !== undefined ? { pid: child.pid } : {}),
      });
      if (this.readyPattern && this.state === "starting" && this.readyPattern.test(entry.msg)) {
        this.becomeReady();
      }
    });
    source.on("data", (chunk: string) => splitter.push(chunk));
    source.on("end", () => splitter.flush());
  }

  private beginReadiness(): void {
    const readiness = this.spec.readiness;
    if (readiness.type === "started") {
      this.becomeReady();
      return;
    }
    this.readyTimer = setTimeout(() => {
      if (this.state !== "starting" || !this.child) return;
      this.note(`not ready within ${formatMs(this.spec.readyTimeoutMs)}: stopping it`, 50);
      this.reason = "readiness timeout";
      this.signalGroup(this.child, "SIGKILL");
    }, this.spec.readyTimeoutMs);
    if (readiness.type === "tcp" || readiness.type === "path") this.probe(50);
  }

  private probe(delayMs: number): void {
    this.probeTimer = setTimeout(() => {
      if (this.state !== "starting") return;
      const again = () => this.probe(Math.min(delayMs * 2, 1000));
      const readiness = this.spec.readiness;
      if (readiness.type === "path") {
        if (existsSync(readiness.path)) this.becomeReady();
        else again();
      } else if (readiness.type === "tcp") {
        const socket = connect({ port: readiness.port, host: readiness.host });
        socket.once("connect", () => {
          socket.destroy();
          if (this.state === "starting") this.becomeReady();
        });
        socket.once("error", () => {
          socket.destroy();
          again();
        });
      }
    }, delayMs);
  }

  private becomeReady(): void {
    if (this.state !== "starting") return;
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.readyTimer = null;
    if (this.spec.readiness.type !== "started") {
      this.note(`ready after ${formatMs(Date.now() - this.startedAt)}`);
    }
    this.setState("running", null);
  }

  private onSpawnFailure(err: Error): void {
    this.note(`could not start: ${err.message}`, 50);
    this.child = null;
    this.onExit(null, null, `could not start: ${err.message}`);
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, why?: string): void {
    const at = Date.now();
    const ranMs = at - this.startedAt;
    this.lastExit = { code, signal, at };
    const how = why ?? (signal ? `killed by ${signal}` : `exited with code ${code}`);
    if (this.state === "stopping" || this.state === "stopped") {
      this.note(`${how} (stopped)`);
      this.setState("stopped", this.reason);
      return;
    }
    this.clearTimers();
    const decision = this.tracker.onExit({ code: why ? null : code, signal, ranMs, at });
    switch (decision.action) {
      case "restart":
        this.note(
          `${how} after ${formatMs(ranMs)}; restarting in ${formatMs(decision.delayMs)}`,
          40,
        );
        this.setState("backoff", `${how}; restart in ${formatMs(decision.delayMs)}`);
        this.backoffTimer = setTimeout(() => {
          this.backoffTimer = null;
          this.restarts += 1;
          // Waiting again: the supervisor launches it once its dependencies are running.
          this.setState("waiting", "restarting");
        }, decision.delayMs);
        break;
      case "stay-stopped":
        this.note(`${how}; not restarted: ${decision.reason}`);
        this.setState("exited", `${how}; ${decision.reason}`);
        break;
      case "give-up":
        this.note(`${how}; giving up: ${decision.reason}`, 50);
        this.setState("failed", `${how}; gave up: ${decision.reason}`);
        break;
    }
  }

  private signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
    if (!child.pid) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // The group is already gone.
    }
  }

  private clearTimers(): void {
    for (const timer of [this.backoffTimer, this.readyTimer, this.probeTimer]) {
      if (timer) clearTimeout(timer);
    }
    this.backoffTimer = this.readyTimer = this.probeTimer = null;
  }

  private setState(state: ServiceState, reason: string | null): void {
    const changed = this.state !== state || this.reason !== reason;
    this.state = state;
    this.reason = reason;
    if (changed) this.emit("state", state);
  }
}
