// The real init with the real supervisor as PID 1 and 2 of a PID namespace: the node's
// process tree as it boots, crashes and powers off, seen through the control socket.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ControlClient, type ServiceStatus } from "../../src/os/index.js";
import { allProcs, environOf, pidNamespace, Run, repo, sharedDir } from "./namespace.js";

const SUPERVISOR = join(repo, "dist/src/os/main.js");
const CLI = join(repo, "dist/src/cli/main.js");

let dir = "";
before(() => {
  dir = sharedDir();
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function flatgrid(socket: string, ...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args, "--socket", socket], {
    encoding: "utf8",
    timeout: 30_000,
  });
}

describe("init and supervisor together", () => {
  test("boot, supervisor crash, ordered poweroff", { timeout: 120_000 }, async () => {
    const journal = join(dir, "journal");
    const service = (name: string, dependsOn: string[]) => ({
      name,
      dependsOn,
      command: [
        "sh",
        "-c",
        `echo start ${name} >> ${journal}; trap 'echo stop ${name} >> ${journal}; exit 0' TERM; echo ready; while :; do sleep 0.05; done`,
      ],
      readiness: { type: "log", pattern: "^ready$" },
    });
    writeFileSync(
      join(dir, "services.json"),
      JSON.stringify({ services: [service("store", []), service("api", ["store"])] }),
    );
    writeFileSync(join(dir, "cmdline"), "console=ttyS0 flatgrid.net=bogus\n");
    const run = await Run.start(true, [
      "--stop-timeout",
      "15",
      "--",
      process.execPath,
      SUPERVISOR,
      "--services",
      join(dir, "services.json"),
      "--cmdline",
      join(dir, "cmdline"),
    ]);
    try {
      // The socket lives on the namespace's own /run; reach it through init's root.
      const socket = `/proc/${run.initPid}/root/run/flatgrid/supervisor.sock`;
      const client = new ControlClient(socket);
      const services = async () =>
        (await client.get<{ services: ServiceStatus[] }>("/v1/services")).services;
      const allRunning = async () => {
        const list = await services().catch(() => []);
        return list.length === 2 && list.every((s) => s.state === "running") ? list : undefined;
      };
      const before = await waitAsync("both services running", allRunning, run);

      const node = JSON.parse(flatgrid(socket, "config", "--json").stdout) as {
        bootMode: string;
        configErrors: { text: string }[];
      };
      assert.equal(node.bootMode, "namespace");
      assert.match(
        node.configErrors[0]?.text ?? "",
        /flatgrid\.net=bogus must be "dhcp" or "static"/,
      );
      assert.match(run.log, /boot mode namespace: not the node OS/);

      // Kill the supervisor: init restarts it, and the new one replaces the old services
      // instead of running a second copy beside them.
      const supervisor = allProcs().find(
        (p) => p.ppid === run.initPid && p.cmdline.includes(SUPERVISOR),
      );
      assert.ok(supervisor, run.log);
      process.kill(supervisor.pid, "SIGKILL");
      await run.logged(/supervisor \(pid \d+\) killed by signal 9/);
      await run.logged(/stopped store \(pid \d+\) left running by a previous supervisor/);
      const afterCrash = await waitAsync(
        "services running again under the new supervisor",
        async () => {
          const list = await allRunning();
          return list?.every((s, i) => s.pid !== before[i]?.pid) ? list : undefined;
        },
        run,
      );
      assert.equal(afterCrash.length, 2);
      const copies = (name: string) =>
        allProcs().filter(
          (p) =>
            pidNamespace(p.pid) === run.ns &&
            p.state !== "Z" &&
            environOf(p.pid).includes(`FLATGRID_SERVICE=${name}`) &&
            p.cmdline.startsWith("sh -c"),
        ).length;
      assert.equal(copies("store"), 1);
      assert.equal(copies("api"), 1);

      // Power off through the API: services stop in reverse order, the namespace ends.
      const reply = flatgrid(socket, "poweroff");
      assert.equal(reply.status, 0, reply.stderr);
      const exit = await run.ended(30_000);
      assert.deepEqual(exit, { code: null, signal: "SIGINT" });
      const lines = readFileSync(journal, "utf8").trim().split("\n");
      assert.deepEqual(lines.slice(-2), ["stop api", "stop store"]);
      assert.match(run.log, /shutting down to power off/);
    } finally {
      await run.cleanup();
    }
  });
});

async function waitAsync<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  run: Run,
): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}\n--- log:\n${run.log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
