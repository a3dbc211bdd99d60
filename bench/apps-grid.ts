/**
 * Deploy and recovery times of `shop` on a real 3-node grid (the cluster harness: a
 * supervisor, grid service and etcd per node in its own network namespace; real
 * `flatgrid vmm` processes on this host's KVM, with the freestanding idle guest as every
 * class's kernel, since this host's KVM boots no Linux: see DESIGN.md).
 *
 * - deploy: `POST /v1/apps` to every instance `running` (its guest said ready), next to the
 *   same five VMs (their vm.json, taps in a namespace) started by hand with `flatgrid vmm`
 *   at once, until each guest said ready: the difference is what the grid adds (the
 *   controller's placement, the agents' image checks, networks, volumes, control groups).
 * - recovery: kill -9 of every process of the node that runs db.0 to db.0 `running` on
 *   another node, with the grid's production graces (an instance moves 15 s after its node
 *   lost the grid, the time its VMs take to fence themselves).
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type AppStatus, callGrid } from "../src/grid/index.js";
import { formedWithVoters, GridCluster } from "../test/cluster/grid-harness.js";
import { idleCatalog } from "../test/cluster/idle-catalog.js";
import { sleep, sweepStale } from "../test/cluster/netns.js";
import { median, progress, report } from "./report.js";

const CLI = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const SHOP = fileURLToPath(new URL("../../examples/shop.yaml", import.meta.url));
/** The grid service's defaults (grid-node.ts): what an operator's grid runs with. */
const DEAD_GRACE_MS = 60_000;
const INSTANCE_GRACE_MS = 15_000;

async function appStatus(g: GridCluster, index: number): Promise<AppStatus | null> {
  try {
    return await callGrid<AppStatus>("GET", "/v1/apps/shop", g.node(index).gridSocket);
  } catch {
    return null;
  }
}

async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  every = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(every);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

/** Seconds from create to every instance running; leaves shop running. */
async function deploy(g: GridCluster): Promise<number> {
  const t0 = performance.now();
  await callGrid("POST", "/v1/apps", g.node(1).gridSocket, {
    file: SHOP,
    source: readFileSync(SHOP, "utf8"),
  });
  await until(
    "shop running",
    async () => (await appStatus(g, 1))?.instances.every((i) => i.state === "running") ?? false,
    300_000,
  );
  return performance.now() - t0;
}

async function destroy(g: GridCluster): Promise<void> {
  await callGrid("DELETE", "/v1/apps/shop", g.node(1).gridSocket);
  await until("no VMM left", async () => vmmPids().length === 0, 120_000, 250);
}

function vmmPids(): number[] {
  try {
    return execFileSync("pgrep", ["-f", "vmm --config"], { encoding: "utf8" })
      .trim()
      .split("\n")
      .map(Number);
  } catch {
    return [];
  }
}

interface VmJson {
  nics: { tap: string; mac: string }[];
  disks: { path: string; readOnly: boolean }[];
}

/** Every instance's vm.json, as its agent wrote it. */
function vmConfigs(g: GridCluster, s: AppStatus): { id: string; config: VmJson }[] {
  return s.instances.map((i) => {
    const node = Number(i.hostname?.replace("node-", ""));
    const file = join(g.node(node).dir, "state", "instances", "shop", i.id, "vm.json");
    return { id: i.id, config: JSON.parse(readFileSync(file, "utf8")) as VmJson };
  });
}

/**
 * The same VMs by hand: their configurations, with copies of their data volumes (made now:
 * destroying the application removes them) and a tap each in a namespace of our own.
 */
function prepareByHand(
  configs: { id: string; config: VmJson }[],
  scratch: string,
  round: number,
): { config: string; log: string }[] {
  return configs.map(({ id, config }, n) => {
    const disks = config.disks.map((d, k) => {
      if (d.readOnly) return d;
      const copy = join(scratch, `${round}-${id}-disk${k}`);
      execFileSync("cp", ["--sparse=always", d.path, copy]);
      return { ...d, path: copy };
    });
    const file = join(scratch, `${round}-${id}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        ...config,
        disks,
        nics: config.nics.map((x) => ({ ...x, tap: `fgbt${n}` })),
      }),
    );
    return { config: file, log: join(scratch, `${round}-${id}.log`) };
  });
}

/** Starts every VM at once with `flatgrid vmm`; ms until every guest said ready. */
async function byHand(vms: { config: string; log: string }[]): Promise<number> {
  const ns = `fgb-${process.pid}`;
  execFileSync("ip", ["netns", "add", ns]);
  const children: ReturnType<typeof spawn>[] = [];
  try {
    for (const [n] of vms.entries()) {
      execFileSync("ip", ["-n", ns, "tuntap", "add", "dev", `fgbt${n}`, "mode", "tap"]);
      execFileSync("ip", ["-n", ns, "link", "set", `fgbt${n}`, "up"]);
    }
    for (const vm of vms) writeFileSync(vm.log, "");
    const t0 = performance.now();
    for (const vm of vms)
      children.push(
        spawn(
          "sh",
          [
            "-c",
            'exec ip netns exec "$0" "$1" "$2" vmm --config "$3" --socket "$3.sock" >"$4" 2>&1',
            ns,
            process.execPath,
            CLI,
            vm.config,
            vm.log,
          ],
          { stdio: "ignore" },
        ),
      );
    await until(
      "the VMs started by hand said ready",
      async () =>
        vms.every((vm) => /^flatgrid-guest: ready\r?$/m.test(readFileSync(vm.log, "latin1"))),
      120_000,
      20,
    );
    return performance.now() - t0;
  } finally {
    for (const c of children) c.kill("SIGKILL");
    await sleep(300);
    execFileSync("sh", ["-c", `ip netns pids ${ns} | xargs -r kill -9; ip netns del ${ns}`]);
  }
}

export async function deployAndRecovery(rounds: number): Promise<void> {
  sweepStale();
  const scratch = mkdtempSync(join(tmpdir(), "flatgrid-bench-apps-"));
  const g = GridCluster.create({
    nodes: 3,
    deadGraceMs: DEAD_GRACE_MS,
    instanceGraceMs: INSTANCE_GRACE_MS,
    images: idleCatalog(join(scratch, "catalog")),
  });
  try {
    g.startAll();
    await g.until("one grid of 3 nodes, 3 voters", formedWithVoters(3, 3), 120_000);
    progress("3 nodes: one grid, 3 voters");
    const deploys: number[] = [];
    const hand: number[] = [];
    for (let r = 0; r < rounds; r++) {
      deploys.push(await deploy(g));
      const s = await appStatus(g, 1);
      if (!s) throw new Error("no app status");
      const vms = prepareByHand(vmConfigs(g, s), scratch, r);
      if (r < rounds - 1) await destroy(g);
      else progress("shop stays for the recovery");
      hand.push(await byHand(vms));
      progress(
        `round ${r + 1}: deploy ${deploys.at(-1)?.toFixed(0)} ms, the same VMs by hand ${hand.at(-1)?.toFixed(0)} ms`,
      );
    }
    report({
      bench: "apps",
      metric: "deploy_shop_ms",
      value: median(deploys),
      unit: "ms",
      baseline: "the same 5 VMs started at once with flatgrid vmm",
      baseline_value: median(hand),
      note: `median of ${rounds} (first ${deploys[0]?.toFixed(0)} ms); cluster harness, 3 nodes, idle guest as every class's kernel; POST /v1/apps to every instance running`,
    });

    const before = await appStatus(g, 1);
    const db = before?.instances.find((i) => i.id === "db.0");
    const victim = Number(db?.hostname?.replace("node-", ""));
    if (!db || !victim) throw new Error("db.0 is not placed");
    const survivor = victim === 1 ? 2 : 1;
    await g.powerOff(victim);
    const t0 = performance.now();
    await until(
      "db.0 running elsewhere",
      async () => {
        const s = await appStatus(g, survivor);
        const now = s?.instances.find((i) => i.id === "db.0");
        return now?.state === "running" && now.hostname !== `node-${victim}`;
      },
      180_000,
    );
    const recovery = performance.now() - t0;
    progress(
      `db.0 ran on node-${victim}, killed; running elsewhere after ${recovery.toFixed(0)} ms`,
    );
    report({
      bench: "apps",
      metric: "recovery_db_ms",
      value: recovery,
      unit: "ms",
      note: `kill -9 of node-${victim} (db.0's) to db.0 running on another node; includes the ${INSTANCE_GRACE_MS} ms instance grace (the fencing wait)`,
    });
  } finally {
    await g.destroy();
    rmSync(scratch, { recursive: true, force: true });
  }
}
