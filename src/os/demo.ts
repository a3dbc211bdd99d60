import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ServiceSpecInput } from "./service-spec.js";

/**
 * `flatgrid demo node`: boots one flatgrid node's process foundation, for real, in a
 * private PID and mount namespace on this machine: native/init as PID 1, the supervisor as
 * PID 2, and a few services. Then it does what an operator would: lists services, reads
 * logs, restarts one, kills the supervisor, and powers the node off. (`npm run demo` boots
 * a whole simulated grid instead.) What is not built yet, it says rather than pretends.
 */

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const INIT = join(ROOT, "native/out/init");
const SUPERVISOR = join(ROOT, "dist/src/os/main.js");
const CLI = join(ROOT, "dist/src/cli/main.js");

const NOT_BUILT = [
  "replication of instances' data volumes (a db moved to another node starts empty)",
];

function demoServices(): ServiceSpecInput[] {
  return [
    {
      name: "inventory",
      description: "logs this node's CPUs, memory, KVM and links (structured JSON)",
      command: [process.execPath, join(ROOT, "dist/src/os/inventory-service.js")],
      env: { FLATGRID_INVENTORY_INTERVAL_MS: "2000" },
      logFormat: "json",
      readiness: { type: "log", pattern: "^inventory$" },
    },
    {
      name: "ticker",
      description: "a plain text service that depends on inventory",
      dependsOn: ["inventory"],
      command: ["sh", "-c", "while :; do echo tick; sleep 1; done"],
    },
    {
      name: "crasher",
      description: "crashes at once, to show backoff and giving up",
      command: ["sh", "-c", "echo 'cannot open /nonexistent/config' >&2; exit 1"],
      restart: { initialDelayMs: 300, maxFailures: 3, windowMs: 60_000 },
    },
  ];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A timeout that does not keep the process alive once everything else is done. */
const deadline = (ms: number) => new Promise<null>((r) => setTimeout(() => r(null), ms).unref());

function step(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

export async function runDemo(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write("flatgrid demo: needs root (it makes a PID and mount namespace)\n");
    return 1;
  }
  for (const file of [INIT, SUPERVISOR]) {
    if (!existsSync(file)) {
      process.stderr.write(`flatgrid demo: ${file} is missing: run npm run build\n`);
      return 1;
    }
  }
  // Not under /tmp: init mounts a fresh tmpfs there inside the namespace.
  const dir = mkdtempSync("/var/tmp/flatgrid-demo-");
  writeFileSync(join(dir, "services.json"), JSON.stringify({ services: demoServices() }, null, 2));
  writeFileSync(
    join(dir, "cmdline"),
    "console=ttyS0 flatgrid.grid=demo flatgrid.token=demo-token-0123456789\n",
  );

  step(
    "booting: native/init as PID 1 of a private PID and mount namespace, the supervisor as PID 2",
  );
  const node = spawn(
    "unshare",
    [
      "--pid",
      "--fork",
      "--mount",
      "--propagation",
      "private",
      INIT,
      "--stop-timeout",
      "10",
      "--",
      process.execPath,
      SUPERVISOR,
      "--services",
      join(dir, "services.json"),
      "--cmdline",
      join(dir, "cmdline"),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const console = (data: Buffer) => {
    for (const line of data.toString().split("\n"))
      if (line) process.stdout.write(`  console | ${line}\n`);
  };
  node.stdout?.on("data", console);
  node.stderr?.on("data", console);
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    node.once("exit", (code, signal) => resolve({ code, signal })),
  );

  try {
    const initPid = await waitFor(() => {
      const children = readText(`/proc/${node.pid}/task/${node.pid}/children`).trim();
      return children ? Number(children.split(" ")[0]) : undefined;
    });
    // The node's /run is its own; from outside it is reached through init's root.
    const socket = `/proc/${initPid}/root/run/flatgrid/supervisor.sock`;
    await waitFor(() => (flatgrid(socket, ["services"], true).status === 0 ? true : undefined));
    await sleep(2500);

    step("flatgrid services");
    flatgrid(socket, ["services"]);
    // All of it (a few lines): its first line is the inventory, then load every 2 s, and a
    // busy machine gets round to this step late.
    step("flatgrid logs inventory          (our services log structured JSON)");
    flatgrid(socket, ["logs", "inventory"]);
    step("flatgrid logs crasher            (restarted with growing delays, then given up)");
    flatgrid(socket, ["logs", "crasher"]);
    step("flatgrid service restart ticker");
    flatgrid(socket, ["service", "restart", "ticker"]);

    const supervisorPid = readText(`/proc/${initPid}/task/${initPid}/children`)
      .trim()
      .split(" ")[0];
    step(
      `kill -9 the supervisor (pid ${supervisorPid} outside the namespace, 2 inside): init restarts it, and it takes its services back`,
    );
    if (supervisorPid) process.kill(Number(supervisorPid), "SIGKILL");
    await sleep(1500);
    await waitFor(() => (flatgrid(socket, ["services"], true).status === 0 ? true : undefined));
    await sleep(1000);
    flatgrid(socket, ["services"]);

    step("flatgrid config   (kernel command line keys flatgrid.*)");
    flatgrid(socket, ["config"]);

    step(
      "flatgrid poweroff   (services stop in reverse dependency order, then init ends the node)",
    );
    flatgrid(socket, ["poweroff"]);
    const end = await Promise.race([ended, deadline(30_000)]);
    if (!end) throw new Error("the node did not power off within 30 s");
    process.stdout.write(
      `\nThe namespace ended ${end.signal === "SIGINT" ? "by power-off (the kernel turns reboot(POWER_OFF) in a PID namespace into SIGINT)" : `with ${JSON.stringify(end)}`}.\n`,
    );
    process.stdout.write(
      `\nThe grid: \`npm run demo\` boots three simulated servers from the node image that form one.\nNot built yet (see \`issues\`):\n${NOT_BUILT.map((n) => `  - ${n}`).join("\n")}\n`,
    );
    return end.signal === "SIGINT" ? 0 : 1;
  } catch (err) {
    process.stderr.write(`flatgrid demo: ${(err as Error).message}\n`);
    return 1;
  } finally {
    stopTree(node);
    await Promise.race([ended, deadline(5000)]);
    rmSync(dir, { recursive: true, force: true });
  }
}

function flatgrid(socket: string, args: string[], quiet = false) {
  const r = spawnSync(process.execPath, [CLI, ...args, "--socket", socket], {
    encoding: "utf8",
    timeout: 30_000,
  });
  if (!quiet) process.stdout.write(r.stdout + r.stderr);
  return r;
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

async function waitFor<T>(probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("the node did not come up in time");
    await sleep(100);
  }
}

function stopTree(node: ChildProcess): void {
  if (node.exitCode !== null || node.signalCode !== null || !node.pid) return;
  // Killing init ends its whole PID namespace.
  const initPid = readText(`/proc/${node.pid}/task/${node.pid}/children`).trim().split(" ")[0];
  if (initPid) process.kill(Number(initPid), "SIGKILL");
  node.kill("SIGKILL");
}
