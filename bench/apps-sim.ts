/**
 * shop's deploy and recovery times in the simulator: 3 emulated servers booted from the node
 * image (build/image) with the catalog (build/catalog), real haproxy, httpd and redis guests
 * on each node's nested KVM. Everything is asked through the nodes' debug shells, as an
 * operator at the servers' serial consoles would.
 *
 * - deploy: `flatgrid app create` on node-1 until `app status` shows every instance
 *   `running` (its guest said ready), polled every few seconds (the resolution is in the
 *   report). Next to it, in the same run, the same five VMs started by hand with
 *   `flatgrid vmm` on the same nodes (their vm.json as the agents wrote them, their own
 *   taps, a copy of db's volume), all at once, until each guest said ready, timed on the
 *   node itself: the difference is what the grid adds (placement, image checks, networks,
 *   volumes, control groups, and the agents' reports travelling through etcd).
 * - recovery: kill -9 of the QEMU of the server that runs db.0, until every instance runs
 *   again on the other two and lb serves a page. The grid's graces are the servers' times
 *   the simulator's timescale (10 under TCG): an instance moves 150 s after its node lost
 *   the grid.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AppStatus } from "../src/grid/index.js";
import {
  down,
  jsonLine,
  kill,
  lanGet,
  loadState,
  nodeGridStatus,
  onNode,
  type SimNode,
  up,
  type WatchAppOptions,
  watchApp,
} from "../src/sim/index.js";
import { progress, report } from "./report.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CATALOG = join(ROOT, "build/catalog");
const SHOP = "/usr/lib/flatgrid/examples/shop.yaml";
const POLL_MS = 3000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A command in node N's debug shell; its output. */
function on(dir: string, index: number, command: string, timeoutMs = 180_000): Promise<string> {
  return onNode(nodeOf(dir, index), command, { timeoutMs });
}

function nodeOf(dir: string, index: number): SimNode {
  const n = loadState(dir).nodes[index - 1];
  if (!n) throw new Error(`no node-${index}`);
  return n;
}

/** Asks node N for shop's status every few seconds until `done`. */
function shopUntil(
  dir: string,
  index: number,
  done: (s: AppStatus) => boolean,
  timeoutMs: number,
  onChange?: WatchAppOptions["onChange"],
): Promise<AppStatus> {
  return watchApp(nodeOf(dir, index), "shop", {
    done,
    timeoutMs,
    intervalMs: POLL_MS,
    ...(onChange && { onChange }),
  });
}

/**
 * The five VMs by hand, on the nodes that ran them: each node copies its instances' vm.json
 * with a tap of its own (not on any bridge: the guests need not talk to be ready) and db's
 * volume copied, starts them all at once, and prints the milliseconds until the last of its
 * guests said ready, by its own clock.
 */
function byHandScript(ids: string[]): string {
  const js = [
    `const fs = require("fs"), cp = require("child_process");`,
    `const ids = ${JSON.stringify(ids)};`,
    `const base = "/var/lib/flatgrid/instances/shop", out = "/var/lib/flatgrid/bench";`,
    `fs.rmSync(out, { recursive: true, force: true }); fs.mkdirSync(out);`,
    // The node's cp is busybox's, without --sparse: copy the volume's written blocks only.
    `function sparseCopy(from, to) { const i = fs.openSync(from, "r"), o = fs.openSync(to, "w"), b = Buffer.alloc(1 << 20);`,
    `  fs.ftruncateSync(o, fs.fstatSync(i).size);`,
    `  for (let at = 0, n; (n = fs.readSync(i, b, 0, b.length, at)) > 0; at += n) if (b.subarray(0, n).some((x) => x)) fs.writeSync(o, b, 0, n, at);`,
    `  fs.closeSync(i); fs.closeSync(o); }`,
    // Taps an earlier, interrupted run left behind.
    `for (let n = 0; n < 8; n++) cp.spawnSync("ip", ["link", "del", "fgbench" + n]);`,
    `const vms = ids.map((id, n) => {`,
    `  const c = JSON.parse(fs.readFileSync(base + "/" + id + "/vm.json", "utf8"));`,
    `  const tap = "fgbench" + n;`,
    `  cp.execFileSync("ip", ["tuntap", "add", "dev", tap, "mode", "tap"]);`,
    `  cp.execFileSync("ip", ["link", "set", tap, "up"]);`,
    `  c.nics = (c.nics || []).map((x) => ({ ...x, tap }));`,
    `  c.disks = (c.disks || []).map((d, k) => { if (d.readOnly) return d;`,
    `    const copy = out + "/" + id + "-" + k; sparseCopy(d.path, copy); return { ...d, path: copy }; });`,
    `  const file = out + "/" + id + ".json"; fs.writeFileSync(file, JSON.stringify(c));`,
    `  return { id, file, log: out + "/" + id + ".log" };`,
    `});`,
    `const t0 = Date.now();`,
    `const children = vms.map((v) => cp.spawn("flatgrid", ["vmm", "--config", v.file, "--socket", v.file + ".sock"], { stdio: ["ignore", fs.openSync(v.log, "w"), "ignore"] }));`,
    `const ready = {};`,
    `const timer = setInterval(() => { for (const v of vms) if (!ready[v.id] && /flatgrid-guest: ready/.test(fs.readFileSync(v.log, "latin1"))) ready[v.id] = Date.now() - t0;`,
    `  if (Object.keys(ready).length === vms.length || Date.now() - t0 > 600000) { clearInterval(timer);`,
    `    for (const c of children) c.kill("SIGKILL");`,
    `    for (const [n] of vms.entries()) cp.spawnSync("ip", ["link", "del", "fgbench" + n]);`,
    `    console.log(JSON.stringify({ ready })); } }, 50);`,
  ].join("\n");
  return `node -e '${js.replace(/'/g, `'"'"'`)}'`;
}

export async function simDeployAndRecovery(): Promise<void> {
  if (
    !existsSync(join(ROOT, "build/image/initrd.img")) ||
    !existsSync(join(CATALOG, "manifest.json"))
  )
    throw new Error(
      "the simulator part needs the node image and the catalog: npm run image && npm run catalog",
    );
  const dir = mkdtempSync("/var/tmp/flatgrid-bench-sim-");
  try {
    const booted = await up({
      dir,
      nodes: 3,
      cpus: 2,
      memoryMiB: 3072,
      catalog: CATALOG,
      progress: (line) => progress(`sim: ${line}`),
    });
    progress(`3 servers ready in ${booted.seconds.toFixed(0)} s (${booted.state.accel.accel})`);
    const deadline = Date.now() + 600_000;
    for (;;) {
      const { grid: g } = await nodeGridStatus(nodeOf(dir, 1), 180_000);
      if (g?.nodes?.length === 3 && g.voters?.length === 3 && g.controller) break;
      if (Date.now() > deadline)
        throw new Error("not a grid of 3 nodes with 3 etcd voters in 600 s");
      await sleep(POLL_MS);
    }
    progress("one grid, 3 voters");

    const t0 = Date.now();
    await on(dir, 1, `flatgrid app create -f ${SHOP}`);
    const running = await shopUntil(
      dir,
      1,
      (s) => s.instances.every((i) => i.state === "running"),
      900_000,
      (line, seconds) => progress(`${seconds.toFixed(0)} s: ${line}`),
    );
    const deployS = (Date.now() - t0) / 1000;
    progress(`shop running ${deployS.toFixed(0)} s after app create`);

    // The same VMs by hand, while the grid's are stopped (the same load on the nodes).
    await on(dir, 1, "flatgrid app stop shop");
    await shopUntil(dir, 1, (s) => s.instances.every((i) => i.state === "stopped"), 300_000);
    const byNode = new Map<number, string[]>();
    for (const i of running.instances) {
      const n = Number(i.hostname?.replace("node-", ""));
      byNode.set(n, [...(byNode.get(n) ?? []), i.id]);
    }
    const handRuns = await Promise.all(
      [...byNode].map(async ([n, ids]) => {
        const out = await on(dir, n, byHandScript(ids), 700_000);
        const r = jsonLine<{ ready: Record<string, number> }>(out);
        if (!r || Object.keys(r.ready).length !== ids.length)
          throw new Error(
            `node-${n}: not every VM started by hand said ready: ${out.slice(-2000)}`,
          );
        return Math.max(...Object.values(r.ready));
      }),
    );
    const handS = Math.max(...handRuns) / 1000;
    progress(
      `the same five VMs by hand with flatgrid vmm: every guest ready after ${handS.toFixed(1)} s`,
    );
    report({
      bench: "apps",
      metric: "sim_deploy_shop_s",
      value: deployS,
      unit: "s",
      baseline: "the same 5 VMs started at once by hand with flatgrid vmm on the same nodes",
      baseline_value: handS,
      note: `3 simulated servers (${booted.state.accel.accel}), 2 vCPUs and 3 GiB each; app create to every instance running, as app status polled every ${POLL_MS / 1000} s through a debug shell shows it (a few seconds of resolution)`,
    });

    await on(dir, 1, "flatgrid app start shop");
    const again = await shopUntil(
      dir,
      1,
      (s) => s.instances.every((i) => i.state === "running"),
      900_000,
    );
    const dbNode = again.instances.find((i) => i.id === "db.0")?.hostname ?? "";
    const victim = Number(dbNode.replace("node-", ""));
    const asker = victim === 1 ? 2 : 1;
    const t1 = Date.now();
    kill(String(victim), dir);
    progress(`killed ${dbNode}, which ran db.0`);
    const moved = await shopUntil(
      dir,
      asker,
      (s) => s.instances.every((i) => i.state === "running" && i.hostname !== dbNode),
      900_000,
    );
    const endpoint = moved.published.find((p) => p.component === "lb")?.endpoint;
    for (;;) {
      const r = await lanGet(loadState(dir).namespace, `http://${endpoint}/`);
      if (r.status === 200 && /hits: \d+/.test(r.body)) break;
      if (Date.now() - t1 > 1_200_000) throw new Error(`lb at ${endpoint} did not serve a page`);
      await sleep(1000);
    }
    const recoveryS = (Date.now() - t1) / 1000;
    progress(
      `db.0 on ${moved.instances.find((i) => i.id === "db.0")?.hostname}; shop served a page ${recoveryS.toFixed(0)} s after the kill`,
    );
    report({
      bench: "apps",
      metric: "sim_recovery_shop_s",
      value: recoveryS,
      unit: "s",
      note: "kill -9 of the QEMU of db.0's server to every instance running on the other two and a page served by lb; includes the 150 s grace before an instance of a lost node moves (15 s times the timescale of 10)",
    });
  } finally {
    down({ dir });
    rmSync(dir, { recursive: true, force: true });
  }
}
