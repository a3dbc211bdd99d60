import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ControlClient, type ServiceSpecInput, type ServiceStatus } from "../../src/os/index.js";

/** The repository root; compiled tests live in dist/test/os. */
export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const SUPERVISOR = join(ROOT, "dist/src/os/main.js");
export const CLI = join(ROOT, "dist/src/cli/main.js");

/** Polls until check returns a value that is not undefined, or fails after timeoutMs. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RunningSupervisor {
  dir: string;
  socket: string;
  process: ChildProcess;
  client: ControlClient;
  output(): string;
  service(name: string): Promise<ServiceStatus>;
  cli(...args: string[]): { status: number | null; stdout: string; stderr: string };
  stop(): Promise<number | null>;
}

/** Starts the real supervisor (as a plain process) with a service table in a fresh directory. */
export async function startSupervisor(
  services: ServiceSpecInput[],
  options: { cmdline?: string; nodeConf?: string; extraArgs?: string[] } = {},
): Promise<RunningSupervisor> {
  const dir = mkdtempSync(join(tmpdir(), "flatgrid-sv-"));
  const socket = join(dir, "supervisor.sock");
  writeFileSync(join(dir, "services.json"), JSON.stringify({ services }));
  writeFileSync(join(dir, "cmdline"), options.cmdline ?? "");
  if (options.nodeConf !== undefined) writeFileSync(join(dir, "node.conf"), options.nodeConf);
  const child = spawn(
    process.execPath,
    [
      SUPERVISOR,
      "--services",
      join(dir, "services.json"),
      "--socket",
      socket,
      "--config-dir",
      dir,
      "--cmdline",
      join(dir, "cmdline"),
      ...(options.extraArgs ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FLATGRID_BOOT: "process" } },
  );
  let output = "";
  child.stdout?.on("data", (d) => {
    output += d;
  });
  child.stderr?.on("data", (d) => {
    output += d;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  const client = new ControlClient(socket);
  await waitFor(`the control socket (output so far: ${output})`, async () => {
    await client.get("/v1/services");
    return true;
  });
  return {
    dir,
    socket,
    process: child,
    client,
    output: () => output,
    service: async (name) =>
      (await client.get<{ service: ServiceStatus }>(`/v1/services/${name}`)).service,
    cli: (...args) => {
      const r = spawnSync(process.execPath, [CLI, ...args], {
        encoding: "utf8",
        env: { ...process.env, FLATGRID_SOCKET: socket },
        timeout: 30_000,
      });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const code = await exited;
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
