// `flatgrid vmm`: one VM per process, driven through its control socket.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Cgroup, removeGroupTree } from "../../src/cgroups/index.js";
import { ControlClient } from "../../src/os/index.js";
import { vmCgroupLimits } from "../../src/vmm/index.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
// The monitor as a node runs it: bundled (image/bundle.ts), its worker threads found by path.
const CLI = join(ROOT, "bundle/src/cli/main.js");
const dir = mkdtempSync(join(tmpdir(), "flatgrid-vmm-"));
after(() => rmSync(dir, { recursive: true, force: true }));

interface VmStatus {
  state: string;
  stats: { exits: Record<string, number>; vcpuTimeMs: number[]; bootMs: number | null };
  memory: { rssMiB: number; guestRssMiB: number; vmmRssMiB: number };
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("flatgrid vmm process", { timeout: 90_000 }, () => {
  it("runs a VM that can be paused, resumed and stopped through its socket", async () => {
    const config = join(dir, "vm.json");
    // memcheck with 64 MiB keeps the vCPU busy for minutes on this machine.
    writeFileSync(
      config,
      JSON.stringify({
        memoryMiB: 64,
        vcpus: 1,
        kernel: join(ROOT, "native/out/testguest-memcheck.elf"),
      }),
    );
    const socket = join(dir, "vmm.sock");
    const child = spawn(
      process.execPath,
      [CLI, "vmm", "--config", config, "--socket", socket, "--wait-start"],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((resolve) =>
      child.once("exit", (code) => resolve(code)),
    );
    try {
      const client = new ControlClient(socket);
      const created = await waitFor("the control socket", () => client.get<VmStatus>("/v1/vm"));
      assert.equal(created.state, "created");
      assert.equal(statSync(socket).mode & 0o777, 0o600);
      await client.post("/v1/vm/start");
      const running = await waitFor("vCPU time", async () => {
        const s = await client.get<VmStatus>("/v1/vm");
        return (s.stats.vcpuTimeMs[0] ?? 0) > 0 && s.stats.bootMs !== null ? s : undefined;
      });
      assert.equal(running.state, "running");
      assert.ok(running.memory.vmmRssMiB > 0 && running.memory.vmmRssMiB < running.memory.rssMiB);

      assert.deepEqual(await client.post("/v1/vm/pause"), { state: "paused" });
      const pausedAt = (await client.get<VmStatus>("/v1/vm")).stats.vcpuTimeMs[0] ?? 0;
      await new Promise((r) => setTimeout(r, 500));
      const stillAt = (await client.get<VmStatus>("/v1/vm")).stats.vcpuTimeMs[0] ?? 0;
      // A paused vCPU uses no CPU (one clock tick of slack).
      assert.ok(
        stillAt - pausedAt <= 10,
        `vCPU time went from ${pausedAt} to ${stillAt} ms while paused`,
      );
      assert.deepEqual(await client.post("/v1/vm/resume"), { state: "running" });
      await waitFor("the vCPU to run again", async () => {
        const s = await client.get<VmStatus>("/v1/vm");
        return (s.stats.vcpuTimeMs[0] ?? 0) > stillAt + 10 ? true : undefined;
      });
      await client.post("/v1/vm/stop");
      assert.equal(await exited, 0);
      assert.match(stderr, /VM ended: stopped/);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("attaches to the console live: the guest's output streams, typed keys reach it", async () => {
    const config = join(dir, "echo.json");
    writeFileSync(
      config,
      JSON.stringify({
        memoryMiB: 16,
        vcpus: 1,
        kernel: join(ROOT, "native/out/testguest-echo.elf"),
      }),
    );
    const socket = join(dir, "echo.sock");
    const vmm = spawn(
      process.execPath,
      [CLI, "vmm", "--config", config, "--socket", socket, "--no-console"],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    const vmmExit = new Promise<number | null>((resolve) =>
      vmm.once("exit", (code) => resolve(code)),
    );
    try {
      const client = new ControlClient(socket);
      await waitFor("the control socket", () => client.get<VmStatus>("/v1/vm"));
      // Keys come through a pipe here; on a terminal the command switches it to raw mode.
      const attach = spawn(process.execPath, [CLI, "vmm-console", "--socket", socket], {
        stdio: ["pipe", "pipe", "pipe"],
      });
      let seen = "";
      attach.stdout.on("data", (d) => {
        seen += d;
      });
      const attachExit = new Promise<number | null>((resolve) =>
        attach.once("exit", (code) => resolve(code)),
      );
      await waitFor("the guest's first line on the attached console", async () =>
        seen.includes("echo ready") ? true : undefined,
      );
      attach.stdin.write("flat");
      await waitFor("the guest to echo the keys", async () =>
        seen.includes("FLAT") ? true : undefined,
      );
      attach.stdin.write("grid.");
      assert.equal(await attachExit, 0, "the console ends with the VM");
      assert.match(seen, /echo ready\nFLATGRID\nbye\n/);
      assert.equal(await vmmExit, 0);
    } finally {
      vmm.kill("SIGKILL");
    }
  });

  it("runs in its control group, with its vCPUs' time and its memory plus the monitor's as limits", async () => {
    const config = join(dir, "cg.json");
    writeFileSync(
      config,
      JSON.stringify({
        memoryMiB: 64,
        vcpus: 2,
        kernel: join(ROOT, "native/out/testguest-memcheck.elf"),
      }),
    );
    const path = `flatgrid-test/vmm-${process.pid}/cg.0`;
    const socket = join(dir, "cg.sock");
    const child = spawn(
      process.execPath,
      [CLI, "vmm", "--config", config, "--socket", socket, "--no-console", "--cgroup", path],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    const exited = new Promise<number | null>((resolve) =>
      child.once("exit", (code) => resolve(code)),
    );
    const group = new Cgroup(path);
    try {
      const client = new ControlClient(socket);
      await waitFor("vCPU time", async () => {
        const s = await client.get<VmStatus>("/v1/vm");
        return (s.stats.vcpuTimeMs[0] ?? 0) > 50 ? s : undefined;
      });
      assert.ok(group.holds(child.pid as number), `pid ${child.pid} in ${group.dirs.join(", ")}`);
      const limits = group.limits();
      assert.deepEqual(limits, vmCgroupLimits({ vcpus: 2, memoryMiB: 64 }));
      assert.equal(limits.memoryBytes, (64 + 128 + 2 * 16) * 2 ** 20);
      // The guest RAM memcheck has written so far, and the monitor's own heap (it joined
      // before it loaded): the node binary's pages stay charged where they were first read.
      const vm = await client.get<VmStatus>("/v1/vm");
      const use = group.usage();
      assert.ok(
        use.memoryBytes >= (vm.memory.guestRssMiB + 8) * 2 ** 20,
        `charged ${(use.memoryBytes / 2 ** 20).toFixed(1)} MiB with ${vm.memory.guestRssMiB} MiB of guest RAM resident`,
      );
      assert.ok(use.memoryBytes <= limits.memoryBytes);
      assert.ok(use.cpuUsec > 50_000, `CPU charged: ${use.cpuUsec} µs`);
      assert.equal(group.remove(), false, "a group with the VMM in it stays");
      await client.post("/v1/vm/stop");
      assert.equal(await exited, 0);
      await waitFor("the group to empty", async () => (group.remove() ? true : undefined));
    } finally {
      child.kill("SIGKILL");
      removeGroupTree(`flatgrid-test/vmm-${process.pid}`);
    }
  });

  it("refuses a control group path that leaves its tree, and runs no VM", async () => {
    const child = spawn(
      process.execPath,
      [CLI, "vmm", "--config", join(dir, "cg.json"), "--cgroup", "flatgrid/../../etc"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const code = await new Promise((resolve) => child.once("exit", resolve));
    assert.equal(code, 1);
    assert.match(stderr, /cgroup flatgrid\/\.\.\/\.\.\/etc: "\.\." is not a plain name/);
  });

  it("refuses a bad vm.json with the file and field", async () => {
    const config = join(dir, "bad.json");
    writeFileSync(config, JSON.stringify({ memoryMiB: 64, vcpus: 0, kernel: "x" }));
    const child = spawn(process.execPath, [CLI, "vmm", "--config", config], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const code = await new Promise((resolve) => child.once("exit", resolve));
    assert.equal(code, 1);
    assert.match(stderr, /bad\.json: field vcpus: must be a whole number from 1 to 64, not 0/);
  });

  it("says why a kernel cannot boot, and exits: the disks' thread keeps nothing alive", async () => {
    // A 24 MiB initrd does not fit in a 16 MiB VM. With a disk, the VM has its queue
    // thread from the start; a failed start used to leave it (and the process) running.
    const initrd = join(dir, "big-initrd");
    writeFileSync(initrd, Buffer.alloc(24 * 2 ** 20));
    const disk = join(dir, "start-fail.img");
    writeFileSync(disk, Buffer.alloc(2 ** 20));
    const config = join(dir, "start-fail.json");
    writeFileSync(
      config,
      JSON.stringify({
        memoryMiB: 16,
        vcpus: 1,
        kernel: join(ROOT, "native/out/testguest-hello.elf"),
        initrd,
        disks: [{ path: disk }],
      }),
    );
    const child = spawn(process.execPath, [CLI, "vmm", "--config", config], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) =>
      child.once("exit", (c, s) => resolve([c, s])),
    );
    clearTimeout(timer);
    assert.equal(signal, null, `the process hung after the error: ${stderr}`);
    assert.equal(code, 1);
    assert.match(
      stderr,
      /testguest-hello\.elf: an initrd of 24 MiB does not fit above the kernel in 16 MiB of RAM/,
    );
  });
});
