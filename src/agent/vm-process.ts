import { type ChildProcess, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { request } from "node:http";
import { join } from "node:path";

/**
 * One `flatgrid vmm` process, started detached so that it outlives a restart of the grid
 * service (which then adopts it from its pid file). Its console and the VMM's own messages go
 * to console.log in the instance's directory.
 */

/** How a VMM process ended; `code` is null when it was adopted and the code is unknown. */
export interface VmExit {
  code: number | null;
  signal: string | null;
  /** The VMM's last words ("VM ended: reset", "fenced: ..."), from console.log. */
  last: string;
}

export interface VmProcessOptions {
  dir: string;
  /** argv[0..] that runs the CLI, e.g. [process.execPath, ".../cli/main.js"]. */
  command: string[];
  lease: { file: string; maxAgeMs: number };
  /** The control group it runs in (flatgrid vmm --cgroup). */
  cgroup?: string;
}

/** What GET /v1/vm of a VMM answers, as far as the agent reads it. */
export interface VmState {
  state: string;
  stats?: { disks?: { bytesRead: number; bytesWritten: number }[] };
  memory?: { rssMiB: number };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Written to console.log before each start: what follows is that run's. */
const START_MARK = "flatgrid agent: starting the VMM";

/** What the VMM of the last run said about itself ("fenced: ...; VM ended: stopped"). */
function lastWords(log: string): string {
  try {
    const text = readFileSync(log, "utf8").slice(-16384);
    const run = text.slice(text.lastIndexOf(START_MARK) + 1);
    return run
      .split("\n")
      .filter((l) => l.startsWith("flatgrid vmm: "))
      .map((l) => l.replace(/^flatgrid vmm: /, ""))
      .join("; ");
  } catch {
    return "";
  }
}

export class VmProcess {
  readonly config: string;
  readonly socket: string;
  readonly log: string;
  private readonly pidFile: string;
  private child: ChildProcess | null = null;
  pid: number | null = null;
  exit: VmExit | null = null;
  private exited: (() => void) | null = null;
  readonly done: Promise<void>;

  constructor(private readonly o: VmProcessOptions) {
    this.config = join(o.dir, "vm.json");
    this.socket = join(o.dir, "vmm.sock");
    this.log = join(o.dir, "console.log");
    this.pidFile = join(o.dir, "vmm.pid");
    this.done = new Promise((resolve) => {
      this.exited = resolve;
    });
  }

  private ended(exit: VmExit): void {
    if (this.exit) return;
    this.exit = exit;
    this.exited?.();
  }

  start(): void {
    const [bin, ...args] = this.o.command;
    const out = openSync(this.log, "a");
    try {
      writeSync(out, `\n${START_MARK} at ${new Date().toISOString()}\n`);
      this.child = spawn(
        bin as string,
        [
          ...args,
          "vmm",
          "--config",
          this.config,
          "--socket",
          this.socket,
          "--lease",
          this.o.lease.file,
          "--lease-ms",
          String(this.o.lease.maxAgeMs),
          ...(this.o.cgroup ? ["--cgroup", this.o.cgroup] : []),
        ],
        // Its own session: a restart of the grid service's process group leaves it running.
        { detached: true, stdio: ["ignore", out, out] },
      );
    } finally {
      closeSync(out);
    }
    this.child.unref();
    this.pid = this.child.pid ?? null;
    if (this.pid) writeFileSync(this.pidFile, `${this.pid}\n`);
    this.child.once("error", (err) =>
      this.ended({ code: null, signal: null, last: `could not start: ${err.message}` }),
    );
    this.child.once("exit", (code, signal) =>
      this.ended({ code, signal, last: lastWords(this.log) }),
    );
  }

  /** Takes over the VMM a previous grid service started, if it still runs. */
  adopt(): boolean {
    if (!existsSync(this.pidFile)) return false;
    const pid = Number(readFileSync(this.pidFile, "utf8").trim());
    if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) return false;
    // A recycled pid would be some other program: it must be our VMM on our vm.json.
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (!argv.includes("vmm") || !argv.includes(this.config)) return false;
    } catch {
      return false;
    }
    this.pid = pid;
    return true;
  }

  /** Whether the guest of this run said `flatgrid-guest: ready` on its console. */
  guestReady(): boolean {
    try {
      const text = readFileSync(this.log, "latin1");
      return /^flatgrid-guest: ready\r?$/m.test(text.slice(text.lastIndexOf(START_MARK)));
    } catch {
      return false;
    }
  }

  /** For an adopted VMM, which is not our child: notices its end by polling. */
  poll(): void {
    if (this.exit || this.child || this.pid === null) return;
    if (!alive(this.pid)) this.ended({ code: null, signal: null, last: lastWords(this.log) });
  }

  /** The VMM's answer to GET /v1/vm, or null when it does not answer (yet). */
  state(timeoutMs = 2000): Promise<VmState | null> {
    return new Promise((resolve) => {
      const req = request(
        { socketPath: this.socket, path: "/v1/vm", timeout: timeoutMs },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            body += c;
          });
          res.on("end", () => {
            try {
              resolve(JSON.parse(body));
            } catch {
              resolve(null);
            }
          });
        },
      );
      req.on("timeout", () => req.destroy());
      req.on("error", () => resolve(null));
      req.end();
    });
  }

  /** SIGTERM (the VMM stops its VM), then SIGKILL after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    if (this.exit || this.pid === null) return;
    const pid = this.pid;
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // Gone already.
    }
    const deadline = Date.now() + graceMs;
    while (!this.exit && Date.now() < deadline) {
      this.poll();
      await Promise.race([this.done, new Promise((r) => setTimeout(r, 100))]);
    }
    if (!this.exit) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Gone already.
      }
      while (!this.exit) {
        this.poll();
        await Promise.race([this.done, new Promise((r) => setTimeout(r, 50))]);
      }
    }
  }
}

/** A piece of an instance's console log, and where it sits in the file. */
export interface ConsoleChunk {
  text: string;
  /** Byte offsets of `text` in console.log; ask for `from: to` next to follow it. */
  from: number;
  to: number;
  /** The log was cut since the `from` asked for (it keeps its last part in console.log.1). */
  rotated: boolean;
}

/** Beyond this console.log is cut to keep the data partition from filling. */
export const CONSOLE_LOG_MAX = 4 * 2 ** 20;
/** What is kept, in console.log.1, when it is cut. */
const CONSOLE_KEEP = 256 * 1024;

/**
 * Up to `max` bytes of a console log from byte `from`, or its last `max` bytes when `from`
 * is null. A log that is missing reads as empty: its VM has not started here yet.
 */
export function readConsole(log: string, from: number | null, max: number): ConsoleChunk {
  let fd: number;
  try {
    fd = openSync(log, "r");
  } catch {
    return { text: "", from: 0, to: 0, rotated: from !== null && from > 0 };
  }
  try {
    const size = fstatSync(fd).size;
    const rotated = from !== null && from > size;
    const start = from === null || rotated ? Math.max(0, from === null ? size - max : 0) : from;
    const buf = Buffer.alloc(Math.min(max, size - start));
    const n = readSync(fd, buf, 0, buf.length, start);
    return { text: buf.subarray(0, n).toString("utf8"), from: start, to: start + n, rotated };
  } finally {
    closeSync(fd);
  }
}

/**
 * Cuts a console log that grew past CONSOLE_LOG_MAX, keeping its last part in console.log.1.
 * Copy, then truncate: the VMM writes on through its O_APPEND descriptor, now from byte 0.
 */
export function rotateConsole(log: string): boolean {
  try {
    if (statSync(log).size <= CONSOLE_LOG_MAX) return false;
    const tail = readConsole(log, null, CONSOLE_KEEP);
    writeFileSync(`${log}.1`, tail.text);
    truncateSync(log, 0);
    return true;
  } catch {
    return false;
  }
}
