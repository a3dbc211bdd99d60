// `flatgrid sim` end to end: three QEMU servers boot over the network (PXE: dnsmasq in the
// simulator's namespace serves DHCP and TFTP, the NICs' iPXE fetches boot.ipxe, the kernel
// and the initrd) as a rack of new servers would, form one grid on the simulator's private
// bridge, a node is killed, and `sim down` leaves nothing.
// The CLI is run as an operator would run it; the nodes are reached only through their
// serial ports (debug shell on ttyS1) and the simulator's namespace.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { GridStatus } from "../../src/grid/index.js";
import {
  down,
  loadState,
  NodeShell,
  namespaceExists,
  READY_LINE,
  type SimStatus,
  vcpuLines,
  WEDGED,
} from "../../src/sim/index.js";
import { newTerminal, tmux } from "../tmux.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "dist/src/cli/main.js");
const DIR = `/var/tmp/flatgrid-e2e-sim-${randomBytes(3).toString("hex")}`;
const NODES = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs `flatgrid sim ARGS --dir DIR`, echoing its progress lines as test diagnostics. */
function sim(args: string[], timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, "sim", ...args, "--dir", DIR], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let partial = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
      partial += d;
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) process.stdout.write(`# ${line}\n`);
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, stdout, stderr });
    });
  });
}

/** QEMUs whose command line names our state directory, zombies excluded. */
function ourQemus(): number[] {
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, "utf8");
        if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) return false;
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(DIR);
      } catch {
        return false;
      }
    })
    .map(Number);
}

let namespace = "";

before(() => {
  if (!existsSync(join(ROOT, "build/image/initrd.img"))) {
    execFileSync(process.execPath, [join(ROOT, "dist/image/build.js")], { stdio: "inherit" });
  }
});

after(() => {
  // Whatever happened, nothing of ours stays running.
  down({ dir: DIR });
  rmSync(DIR, { recursive: true, force: true });
});

describe("flatgrid sim: a 3-node simulated grid", { timeout: 1_200_000 }, () => {
  it(`sim up --nodes ${NODES} --boot pxe boots every node over the network to its ready line`, async () => {
    const started = Date.now();
    const r = await sim(
      ["up", "--nodes", String(NODES), "--boot", "pxe", "--memory", "1024", "--json"],
      900_000,
    );
    assert.equal(r.status, 0, `sim up failed:\n${r.stdout}\n${r.stderr.slice(-3000)}`);
    const result = JSON.parse(r.stdout) as {
      namespace: string;
      accel: { accel: string; reason: string };
      nodes: { name: string; address: string; ready: string }[];
    };
    namespace = result.namespace;
    assert.match(namespace, /^fgsim-/);
    assert.ok(namespaceExists(namespace));
    // It says which accelerator it chose and why.
    assert.match(r.stderr, /accelerator: (TCG|KVM)/);
    assert.equal(result.nodes.length, NODES);
    for (const [i, n] of result.nodes.entries()) {
      process.stdout.write(`# ${n.name}  ${n.ready}\n`);
      assert.equal(n.name, `node-${i + 1}`);
      assert.equal(n.address, `10.215.0.${i + 1}/24`);
      const m = READY_LINE.exec(n.ready);
      assert.ok(m, `${n.name}: ready line`);
      assert.equal(m[2], "yes", `${n.name} has a /dev/kvm of its own`);
    }
    process.stdout.write(
      `# ${NODES} nodes ready in ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
    );

    // Every node came over the network: its address from DHCP (fixed by MAC), the boot
    // script, the kernel and the initrd over TFTP, and the grid's keys from boot.ipxe.
    const state = loadState(DIR);
    assert.equal(state.boot, "pxe");
    assert.ok(state.netboot, "the state records the DHCP and TFTP server");
    const log = readFileSync(state.netboot.log, "utf8");
    for (let i = 1; i <= NODES; i++) {
      const to = `10.215.0.${i}`;
      const lines = log.split("\n");
      assert.ok(
        lines.some((l) => l.includes(`DHCPACK(br0) ${to} 52:54:00:15:00:0${i} node-${i}`)),
        `node-${i}: its fixed address and name by DHCP`,
      );
      for (const file of ["boot.ipxe", "vmlinuz", "initrd.img"])
        assert.ok(
          lines.some((l) => l.endsWith(`/netboot/${file} to ${to}`)),
          `node-${i}: ${file} over TFTP`,
        );
      // From the address to the script: iPXE waits for IPv6 to be configured too, which the
      // router advertisements make quick (without them this was about 16 s).
      const at = (l: string | undefined) => (l ? Date.parse(`2000 ${l.slice(0, 15)}`) : Number.NaN);
      const ack = at(lines.find((l) => l.includes(`DHCPACK(br0) ${to} `)));
      const script = at(lines.find((l) => l.endsWith(`/netboot/boot.ipxe to ${to}`)));
      process.stdout.write(`# node-${i}: DHCP ack to boot.ipxe sent: ${(script - ack) / 1000} s\n`);
      const consoleLog = readFileSync(state.nodes[i - 1]?.qemu.consoleLog ?? "", "latin1");
      assert.match(
        consoleLog,
        /Command line: initrd=initrd\.img console=ttyS0 .*flatgrid\.grid=sim /,
      );
      assert.match(
        consoleLog,
        new RegExp(`flatgrid\\.hostname=node-${i}\\b`),
        "the name from DHCP",
      );
      assert.match(consoleLog, /flatgrid-supervisor: network: DHCP on eth0/);
    }
    assert.match(log, /RTR-ADVERT\(br0\) fd15:215::/, "IPv6 router advertisements on the bridge");
    const st = await sim(["status", "--no-grid"]);
    assert.match(
      st.stdout,
      /^boot {7}BIOS \(SeaBIOS\), over the network: dnsmasq pid \d+ serves DHCP and TFTP/m,
    );

    const again = await sim(["up", "--nodes", "1"]);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already up/);

    const tail = await sim(["console", "2", "--lines", "5"]);
    assert.equal(tail.status, 0);
    assert.equal(tail.stdout.trimEnd().split("\n").length, 5);
  });

  it("the nodes form one grid: node-1's `flatgrid grid status` shows 3 nodes and a controller", async () => {
    const node1 = loadState(DIR).nodes[0];
    assert.ok(node1);
    const shell = new NodeShell(node1.qemu.shellSocket, { qmpSocket: node1.qemu.qmpSocket });
    await shell.open();
    const started = Date.now();
    let last = "nothing yet";
    try {
      for (;;) {
        const { output } = await shell.exec("flatgrid grid status --json", 180_000);
        const json = output.split("\n").find((l) => l.startsWith("{")) ?? "{}";
        const s = JSON.parse(json) as Partial<GridStatus> & { error?: { message: string } };
        last = s.error
          ? `error: ${s.error.message}`
          : `phase ${s.phase}, grid ${s.grid?.name ?? "none"}, quorum ${s.quorum}, ${s.nodes?.length ?? 0} nodes, controller ${s.controller ?? "none"}, voters ${s.voters?.length ?? 0}`;
        process.stdout.write(
          `# grid after ${((Date.now() - started) / 1000).toFixed(0)} s: ${last}\n`,
        );
        if (s.grid && s.quorum && s.nodes?.length === NODES && s.controller) {
          assert.equal(s.grid.name, "sim");
          assert.deepEqual(
            s.nodes.map((n) => `${n.hostname} ${n.address}`).sort(),
            [1, 2, 3].map((i) => `node-${i} 10.215.0.${i}`),
          );
          assert.ok(
            s.nodes.some((n) => n.nodeId === s.controller && n.controller),
            "the controller is one of the registered nodes",
          );
          break;
        }
        if (Date.now() - started > 300_000) {
          // Every node's side of the story: which step each one is stuck at.
          const logs: string[] = [];
          for (const node of loadState(DIR).nodes) {
            const sh =
              node.index === 1
                ? shell
                : new NodeShell(node.qemu.shellSocket, { qmpSocket: node.qemu.qmpSocket });
            const text = await (node.index === 1 ? Promise.resolve() : sh.open())
              .then(() =>
                sh.exec(
                  "flatgrid grid status --json | cut -c1-600; flatgrid logs grid -n 40 | cut -c1-300",
                  180_000,
                ),
              )
              .then((r) => r.output)
              .catch((err: Error) => err.message);
            if (sh !== shell) sh.close();
            logs.push(`--- ${node.name}:\n${text}`);
          }
          assert.fail(
            `no grid of ${NODES} nodes with a controller after ${((Date.now() - started) / 1000).toFixed(0)} s; last: ${last}\n` +
              "(keepalives DEADLINE_EXCEEDED and controllers deposed as their lease is lost, below, mean the grid's timings are too tight for these nodes' speed: see README, The grid simulator)\n" +
              logs.join("\n"),
          );
        }
        await sleep(5000);
      }
      // The text form, as an operator reads it. Right after a membership change the node may
      // briefly say "election in progress": ask again for a while.
      let text = await shell.exec("flatgrid grid status", 180_000);
      for (let i = 0; i < 6 && !/^controller {2}[0-9a-f]{8} /m.test(text.output); i++) {
        await sleep(5000);
        text = await shell.exec("flatgrid grid status", 180_000);
      }
      for (const line of text.output.trimEnd().split("\n")) process.stdout.write(`# ${line}\n`);
      assert.match(text.output, /^controller {2}[0-9a-f]{8} \(node-\d\)$/m);
      assert.match(text.output, /^nodes {7}3$/m);
    } finally {
      shell.close();
    }
  });

  it("sim console 2 --screen shows node-2's full-screen console on its serial line (ttyS2), at the size of the terminal at the other end", async () => {
    // An operator's terminal: tmux, 100×30, running the simulator's attach.
    const session = `fg-e2e-screen-${process.pid}`;
    newTerminal(
      session,
      100,
      30,
      `${process.execPath} ${CLI} sim console 2 --screen --dir ${DIR}; sleep 600`,
    );
    const until = async (
      what: string,
      want: RegExp | ((text: string) => boolean),
      timeoutMs = 120_000,
    ) => {
      const deadline = Date.now() + timeoutMs;
      let text = "";
      while (Date.now() < deadline) {
        text = tmux("capture-pane", "-p", "-t", session);
        if (typeof want === "function" ? want(text) : want.test(text)) return text;
        await sleep(1000);
      }
      assert.fail(`the screen did not show ${what} in ${timeoutMs / 1000} s; it shows:\n${text}`);
    };
    const node2 = loadState(DIR).nodes[1];
    assert.ok(node2);
    const shell = new NodeShell(node2.qemu.shellSocket, { qmpSocket: node2.qemu.qmpSocket });
    try {
      // The attach sends Ctrl-L: the console draws every cell, and asks tmux for its size.
      // First at 80×24 (all a serial line is sure of), then at the size tmux reported.
      const text = await until(
        "node-2's node screen, 100 columns wide",
        // The clock ends one column short of the right edge.
        (t) => t.split("\n")[0]?.length === 99 && /^GRID +sim \([0-9a-f]{8}\)$/m.test(t),
      );
      assert.match(text, /^ flatgrid {2}\| {2}node-2 {2}\| {2}grid sim {2}\| .*\d\d:\d\d:\d\d$/m);
      assert.match(text, /^NODE +node-2 +id [0-9a-f-]+$/m);
      assert.match(text, /^LINKS +eth0 +up +10\.215\.0\.2\/24/m);
      assert.match(text.split("\n")[29] ?? "", /^ F1-F4, Tab: screens/);
      for (const line of text.trimEnd().split("\n")) process.stdout.write(`#   ${line}\n`);
      await shell.open();
      const { output } = await shell.exec("stty -F /dev/ttyS2 size; flatgrid services", 120_000);
      // The serial line had no size; the console asked the terminal and gave it 30×100.
      assert.match(output, /^30 100$/m);
      assert.match(output, /^console-ttys2 +running /m);
      // Keys travel the line too: F2 opens the grid screen.
      tmux("send-keys", "-t", session, "F2");
      await until("the grid screen with 3 nodes", /^NODES \(3\)$/m);
    } finally {
      shell.close();
      tmux("kill-session", "-t", session);
    }
  });

  it("sim kill 1 kills node-1's QEMU, and sim status shows it dead", async () => {
    const pid = loadState(DIR).nodes[0]?.pid;
    const k = await sim(["kill", "1"]);
    assert.equal(k.status, 0, k.stderr);
    assert.match(k.stdout, new RegExp(`node-1: QEMU pid ${pid} killed`));
    assert.ok(pid && !ourQemus().includes(pid), "that QEMU is gone");
    const r = await sim(["status", "--json", "--no-grid"]);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout) as SimStatus;
    assert.deepEqual(
      s.nodes.map((n) => [n.name, n.running]),
      [
        ["node-1", false],
        ["node-2", true],
        ["node-3", true],
      ],
    );
    assert.ok(s.nodes[0]?.killedAt);
    assert.equal(s.nodes[1]?.vm, "running");
    // What a test or the bench prints when a node stops answering: each vCPU with its local
    // APIC, and WEDGED only for a vCPU that sits halted with an interrupt QEMU never delivers.
    const socket = loadState(DIR).nodes[1]?.qemu.qmpSocket as string;
    // One sample may catch an interrupt just raised and not yet taken: a wedge lasts.
    let vcpus = await vcpuLines(socket);
    for (let i = 0; i < 3 && vcpus.some((l) => l.includes(WEDGED)); i++) {
      await new Promise((r) => setTimeout(r, 1000));
      vcpus = await vcpuLines(socket);
    }
    assert.equal(vcpus.length, 1, vcpus.join("\n"));
    assert.match(
      vcpus[0] ?? "",
      /^vCPU 0: RIP \S+ CPL \d .*, APIC: IRR .*, ISR .*, PPR 0x[0-9a-f]+/,
    );
    assert.ok(!vcpus[0]?.includes(WEDGED), vcpus[0]);
    process.stdout.write(`# node-2's vCPU: ${vcpus[0]}\n`);
    const text = await sim(["status", "--no-grid"]);
    assert.match(text.stdout, /^node-1 +killed +- +10\.215\.0\.1\/24/m);
  });

  it("sim down stops everything and removes the namespace and the state", async () => {
    const r = await sim(["down"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /2 QEMUs killed, namespace fgsim-\w+ removed/);
    assert.ok(!namespaceExists(namespace), `namespace ${namespace} is gone`);
    assert.deepEqual(ourQemus(), []);
    assert.ok(!existsSync(DIR), `${DIR} is gone`);
    const status = await sim(["status"]);
    assert.equal(status.status, 1);
    assert.match(status.stderr, /no simulator is up/);
  });
});
