import { EventEmitter } from "node:events";
import type { PidFiles } from "./leftovers.js";
import { LogBuffer } from "./log-buffer.js";
import { Service, type ServiceStatus } from "./service.js";
import { checkServiceGraph, type ServiceSpec, startOrder } from "./service-spec.js";

/** How long a start or restart request waits to report the outcome rather than "starting". */
const SETTLE_MS = 5000;

export class UnknownServiceError extends Error {
  readonly code = "unknown-service";
  constructor(name: string, known: string[]) {
    super(`no service named "${name}" (services: ${known.join(", ")})`);
    this.name = "UnknownServiceError";
  }
}

export class ServiceInUseError extends Error {
  readonly code = "service-in-use";
  constructor(name: string, dependents: string[]) {
    super(`service "${name}" cannot be removed: ${dependents.join(", ")} depend on it`);
    this.name = "ServiceInUseError";
  }
}

/**
 * Runs the service table: a service starts once every service it depends on is running,
 * and stopping goes the other way, a service stopping only after all that depend on it.
 * The supervisor's own notes go into a log of their own named "supervisor".
 */
export class Supervisor extends EventEmitter {
  readonly log = new LogBuffer();
  private readonly services = new Map<string, Service>();
  private order: string[];
  private shuttingDown = false;
  private scheduling = false;
  private scheduleAgain = false;

  constructor(
    specs: readonly ServiceSpec[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly pidFiles: PidFiles | null = null,
  ) {
    super();
    this.order = startOrder(specs);
    for (const spec of specs) this.add(spec);
  }

  private add(spec: ServiceSpec): Service {
    const service = new Service(spec, this.env, this.pidFiles);
    service.on("state", () => {
      this.emit("state", service.status());
      this.schedule();
    });
    this.services.set(spec.name, service);
    return service;
  }

  /**
   * Adds a service at run time, or replaces one (stopping it first), for services whose
   * command line only a running program knows: etcd, whose flags the grid service works
   * out. The new table is checked as a whole first, so a bad spec changes nothing.
   */
  async define(spec: ServiceSpec): Promise<void> {
    const others = [...this.services.values()]
      .map((s) => s.spec)
      .filter((s) => s.name !== spec.name);
    checkServiceGraph([...others, spec], `service ${spec.name}`);
    const old = this.services.get(spec.name);
    if (old) {
      await old.stop("redefined");
      old.removeAllListeners("state");
    }
    this.order = startOrder([...others, spec]);
    this.add(spec);
    this.note(`service ${spec.name} ${old ? "redefined" : "defined"} through the control socket`);
    if (spec.enabled) {
      this.get(spec.name).wait("defined");
      this.schedule();
    }
  }

  /** Stops and forgets a service that no other service depends on. */
  async remove(name: string): Promise<void> {
    const service = this.get(name);
    const dependents = this.order.filter((o) => this.get(o).spec.dependsOn.includes(name));
    if (dependents.length > 0) throw new ServiceInUseError(name, dependents);
    await service.stop("removed");
    service.removeAllListeners("state");
    this.services.delete(name);
    this.order = this.order.filter((o) => o !== name);
    this.note(`service ${name} removed through the control socket`);
  }

  note(msg: string, level = 30): void {
    this.log.append({ stream: "supervisor", level, msg });
  }

  get names(): string[] {
    return [...this.order];
  }

  has(name: string): boolean {
    return this.services.has(name);
  }

  get(name: string): Service {
    const service = this.services.get(name);
    if (!service) throw new UnknownServiceError(name, this.order);
    return service;
  }

  /** Logs by service name; "supervisor" is the supervisor's own. */
  logsOf(name: string): LogBuffer {
    return name === "supervisor" ? this.log : this.get(name).logs;
  }

  statuses(): ServiceStatus[] {
    const now = Date.now();
    return this.order.map((name) => this.get(name).status(now));
  }

  /** Starts every enabled service, each when its dependencies are ready. */
  startAll(): void {
    for (const name of this.order) {
      const service = this.get(name);
      if (service.spec.enabled) service.wait("starting");
    }
    this.schedule();
  }

  async start(name: string): Promise<void> {
    const service = this.get(name);
    service.resetFailures();
    if (service.currentState === "running" || service.currentState === "starting") return;
    service.note("start requested");
    service.wait("start requested");
    this.schedule();
    await service.settled(SETTLE_MS);
  }

  async restart(name: string): Promise<void> {
    const service = this.get(name);
    service.note("restart requested");
    await service.stop("restart requested");
    service.resetFailures();
    service.countRestart();
    service.wait("restart requested");
    this.schedule();
    await service.settled(SETTLE_MS);
  }

  async stop(name: string): Promise<void> {
    const service = this.get(name);
    service.note("stop requested");
    await service.stop();
  }

  /** Stops everything in reverse dependency order; independent services stop together. */
  async stopAll(): Promise<void> {
    this.shuttingDown = true;
    this.note("stopping all services");
    const done = new Map<string, Promise<void>>();
    for (const name of [...this.order].reverse()) {
      const dependents = this.order.filter((other) =>
        this.get(other).spec.dependsOn.includes(name),
      );
      const after = Promise.all(dependents.map((d) => done.get(d)));
      done.set(
        name,
        after.then(() => this.get(name).stop("supervisor stopping")),
      );
    }
    await Promise.all(done.values());
    this.note("all services stopped");
  }

  /**
   * Launches each waiting service (asked to start, or back from its backoff delay) whose
   * dependencies are all running. Called on every state change, so it converges by itself.
   */
  private schedule(): void {
    if (this.shuttingDown) return;
    // State changes made while scheduling call back in here: run one more pass instead.
    if (this.scheduling) {
      this.scheduleAgain = true;
      return;
    }
    this.scheduling = true;
    try {
      do {
        this.scheduleAgain = false;
        this.schedulePass();
      } while (this.scheduleAgain);
    } finally {
      this.scheduling = false;
    }
  }

  private schedulePass(): void {
    for (const name of this.order) {
      const service = this.get(name);
      if (service.currentState !== "waiting") continue;
      const blocking = service.spec.dependsOn.filter(
        (dep) => this.get(dep).currentState !== "running",
      );
      if (blocking.length === 0) service.launch();
      else service.wait(`waiting for ${blocking.join(", ")}`);
    }
  }
}
