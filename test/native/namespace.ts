// Runs native/init under unshare (PID 1 of a fresh PID and mount namespace) or as a plain
// process, and inspects the processes from outside through /proc.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

// This file runs as <repo>/dist/test/native/init.test.js.
export const repo = fileURLToPath(new URL("../../../", import.meta.url));
export const initPath = join(repo, "native/out/init");
export const CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
export const TEST_TIMEOUT = 90_000;

/**
 * A directory shared between a test and its namespace. Not under /run: init mounts a fresh
 * tmpfs there, which would hide a host directory from the namespace.
 */
export function sharedDir(): string {
  assert.equal(process.getuid?.(), 0, "these tests need root (unshare --pid --mount)");
  assert.ok(existsSync(initPath), `${initPath} is missing: run make -C native`);
  return mkdtempSync("/var/tmp/flatgrid-init-test-");
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function until<T>(
  what: string,
  probe: () => T | undefined | false,
  timeoutMs = 20_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

export function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

export interface Proc {
  pid: number;
  ppid: number;
  state: string;
  startTime: string;
  cmdline: string;
}

export function procInfo(pid: number): Proc | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // "pid (comm) state ppid ... starttime(22nd)": comm may contain spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return {
    pid,
    state: fields[0] ?? "?",
    ppid: Number(fields[1]),
    startTime: fields[19] ?? "",
    cmdline: (readText(`/proc/${pid}/cmdline`) ?? "").split("\0").join(" ").trim(),
  };
}

export function allProcs(): Proc[] {
  const procs: Proc[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const info = procInfo(Number(name));
    if (info) procs.push(info);
  }
  return procs;
}

export function pidNamespace(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

export function descendants(root: number): Proc[] {
  const procs = allProcs();
  const found: Proc[] = [];
  const parents = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of procs) {
      if (parents.has(p.ppid) && !parents.has(p.pid)) {
        parents.add(p.pid);
        found.push(p);
        grew = true;
      }
    }
  }
  return found;
}

export function environOf(pid: number): string[] {
  const raw = readText(`/proc/${pid}/environ`) ?? "";
  return raw.split("\0").filter((s) => s !== "");
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running init, either under unshare (namespace mode) or directly (process mode). */
export class Run {
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  log = "";
  initPid = 0;
  ns = "";

  constructor(
    readonly namespaced: boolean,
    args: string[],
    env: NodeJS.ProcessEnv,
  ) {
    const argv = namespaced
      ? ["unshare", "--pid", "--fork", "--mount", "--propagation", "private", initPath, ...args]
      : [initPath, ...args];
    this.child = spawn(argv[0] ?? "", argv.slice(1), { env, stdio: ["ignore", "pipe", "pipe"] });
    this.child.stdout?.on("data", (d: Buffer) => {
      this.log += d.toString();
    });
    this.child.stderr?.on("data", (d: Buffer) => {
      this.log += d.toString();
    });
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  static async start(namespaced: boolean, args: string[], env: NodeJS.ProcessEnv = {}) {
    const run = new Run(namespaced, args, { PATH: process.env.PATH, ...env });
    const outer = run.child.pid ?? 0;
    run.initPid = namespaced
      ? await until("init to start under unshare", () => {
          const kids = readText(`/proc/${outer}/task/${outer}/children`)?.trim();
          return kids ? Number(kids.split(" ")[0]) : undefined;
        })
      : outer;
    // unshare forks init before or after entering the namespace: wait until it differs.
    const mine = pidNamespace(process.pid);
    run.ns = await until("init's PID namespace", () => {
      const ns = pidNamespace(run.initPid);
      return ns && (!namespaced || ns !== mine) ? ns : undefined;
    });
    return run;
  }

  async logged(text: string | RegExp, timeoutMs = 20_000) {
    await until(
      `init to log ${text}`,
      () => (typeof text === "string" ? this.log.includes(text) : text.test(this.log)),
      timeoutMs,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n--- log so far:\n${this.log}`);
    });
  }

  /** Processes in init's PID namespace (namespace mode), init included. */
  nsProcs(): Proc[] {
    return allProcs().filter((p) => pidNamespace(p.pid) === this.ns);
  }

  /** The running supervisor: init's child (not a zombie) running cmdline. */
  supervisor(cmdline: string): Proc | undefined {
    return allProcs().find(
      (p) => p.ppid === this.initPid && p.state !== "Z" && p.cmdline === cmdline,
    );
  }

  async ended(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`init did not end within ${timeoutMs} ms\n${this.log}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Leaves nothing behind, whatever state the test stopped in. */
  async cleanup() {
    if (this.exit) return;
    const tree = descendants(this.initPid);
    for (const pid of [this.initPid, ...tree.map((p) => p.pid), this.child.pid ?? 0]) {
      try {
        if (pid > 0) process.kill(pid, "SIGKILL");
      } catch {}
    }
    await this.ended(20_000);
  }
}

export async function script(dir: string, name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return path;
}

export function mountTable(pid: number | "self") {
  // mountinfo: id parent major:minor root mountpoint options ... - fstype source superoptions
  return (readText(`/proc/${pid}/mountinfo`) ?? "")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => {
      const [left = "", right = ""] = line.split(" - ");
      const l = left.split(" ");
      const r = right.split(" ");
      return { line, target: l[4] ?? "", fstype: r[0] ?? "", options: `${l[5]},${r[2]}` };
    });
}
