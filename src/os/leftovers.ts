import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Services run in sessions of their own, so they outlive a supervisor that crashed or was
 * killed. init then starts a new supervisor, which must not start a second etcd beside the
 * first: each service's pid is kept in a file, and leftovers are stopped before anything
 * starts. The environment check guards against a recycled pid.
 */
export class PidFiles {
  constructor(readonly dir: string) {}

  write(name: string, pid: number): void {
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(this.dir, `${name}.pid`), `${pid}\n`);
    } catch {
      // Without the file only crash clean-up is lost; the service itself runs on.
    }
  }

  remove(name: string): void {
    rmSync(join(this.dir, `${name}.pid`), { force: true });
  }

  /** Stops what a previous supervisor left running; returns one note per leftover. */
  async stopLeftovers(graceMs = 2000): Promise<string[]> {
    let files: string[];
    try {
      files = readdirSync(this.dir).filter((f) => f.endsWith(".pid"));
    } catch {
      return [];
    }
    const found: { name: string; pid: number }[] = [];
    for (const file of files) {
      const name = file.slice(0, -4);
      const pid = Number(readFileSync(join(this.dir, file), "utf8").trim());
      rmSync(join(this.dir, file), { force: true });
      if (Number.isInteger(pid) && pid > 1 && isServiceProcess(pid, name))
        found.push({ name, pid });
    }
    for (const { pid } of found) signalGroup(pid, "SIGTERM");
    const deadline = Date.now() + graceMs;
    while (found.some(({ pid }) => groupAlive(pid)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    return found.map(({ name, pid }) => {
      const stubborn = groupAlive(pid);
      if (stubborn) signalGroup(pid, "SIGKILL");
      return `stopped ${name} (pid ${pid}) left running by a previous supervisor${stubborn ? " (SIGKILL)" : ""}`;
    });
  }
}

function isServiceProcess(pid: number, name: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, "latin1")
      .split("\0")
      .includes(`FLATGRID_SERVICE=${name}`);
  } catch {
    return false;
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Gone already.
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}
