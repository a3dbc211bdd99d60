/**
 * Applications on a real grid (3 node processes in network namespaces, real etcd): the
 * `flatgrid app` commands on any node store the desired state, the controller places the
 * instances, fenced by its term, and places them again once a dead node's grace is over.
 * (Starting the VMs is the agents' part, which does not exist yet: instances stop at
 * "assigned".)
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type AppStatus, callGrid } from "../../src/grid/index.js";
import { formedWithVoters, GridCluster, up } from "./grid-harness.js";
import { sleep, sweepStale } from "./netns.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const SHOP = fileURLToPath(new URL("../../../examples/shop.yaml", import.meta.url));
const INSTANCE_GRACE_MS = 3000;

function progress(msg: string): void {
  process.stderr.write(`  apps: ${msg}\n`);
}

describe("applications on a 3-node grid", { concurrency: false }, () => {
  let g: GridCluster;
  let scratch = "";
  const cli = (index: number, ...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args, "--socket", g.node(index).socket], {
      encoding: "utf8",
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const status = (index: number): AppStatus => {
    const r = cli(index, "app", "status", "shop", "--json");
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out) as AppStatus;
  };
  const untilAssigned = async (
    index: number,
    timeoutMs: number,
    check?: (s: AppStatus) => boolean,
  ) => {
    const deadline = Date.now() + timeoutMs;
    let last: AppStatus | null = null;
    while (Date.now() < deadline) {
      const r = cli(index, "app", "status", "shop", "--json");
      if (r.code === 0) {
        last = JSON.parse(r.out) as AppStatus;
        if (last.instances.every((i) => i.state === "assigned") && (!check || check(last)))
          return last;
      }
      await sleep(200);
    }
    assert.fail(`shop not placed in ${timeoutMs} ms: ${JSON.stringify(last?.instances)}`);
  };

  before(async () => {
    sweepStale();
    scratch = mkdtempSync(join(tmpdir(), "flatgrid-apps-"));
    g = GridCluster.create({ nodes: 3, deadGraceMs: 60_000, instanceGraceMs: INSTANCE_GRACE_MS });
    g.startAll();
    // Three voters, so that killing any one node leaves quorum (with two, it would not).
    await g.until("one grid of 3 nodes, 3 voters", formedWithVoters(3, 3), 60_000);
    progress("3 nodes: one grid, 3 voters");
  });

  after(async () => {
    await g?.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("app create on one node; the controller places every instance, web spread over 3 nodes", async () => {
    const r = cli(2, "app", "create", "-f", SHOP);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^shop: created, 5 instances/);
    const s = await untilAssigned(3, 20_000);
    const webs = s.instances.filter((i) => i.component === "web");
    assert.equal(new Set(webs.map((i) => i.node)).size, 3, "one web per node");
    const nodes = up(await g.statuses());
    for (const i of s.instances) {
      const n = nodes[0]?.nodes.find((x) => x.nodeId === i.node);
      assert.ok(n, `${i.id} is on a registered node`);
      assert.equal(i.address, n.address);
    }
    const text = cli(1, "app", "status", "shop");
    assert.equal(text.code, 0, text.err);
    assert.match(text.out, /^instances {3}5 assigned, 0 pending$/m);
    assert.match(text.out, /^web\.2 +web@1 +assigned +node-\d +10\.\d+\.\d+\.\d+ +0\.5 +256 MiB$/m);
    progress(`app status on node 1:\n${text.out.replace(/^/gm, "    ")}`);
    const ls = cli(3, "app", "ls");
    assert.match(ls.out, /^shop +5 +5 +3 +3 +2 GiB /m);
  });

  it("app explain says why each instance is where it is", () => {
    const r = cli(1, "app", "explain", "shop");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^web\.0 \(0\.5 CPUs, 256 MiB\): on node-\d/m);
    assert.match(r.out, /runs no other web instance of shop/);
    assert.match(r.out, /fits: [\d.]+ CPUs and \d+ MiB left after it/);
  });

  it("a second create with the same name, and a bad descriptor, are refused with the reason", () => {
    const again = cli(1, "app", "create", "-f", SHOP, "--json");
    assert.equal(again.code, 1);
    const err = JSON.parse(again.out) as { error: { code: string; message: string } };
    assert.equal(err.error.code, "app-exists");
    assert.match(err.error.message, /an application named shop exists already/);

    const bad = join(scratch, "bad.yaml");
    writeFileSync(
      bad,
      "name: broken\nbudget: { cpus: 1, memory: 1GiB }\ncomponents:\n  web:\n    class: nosuch@1\n",
    );
    const r = cli(2, "app", "create", "-f", bad);
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`${bad}:5:\\d+: components\\.web\\.class: .*nosuch@1`));
    // Nothing was stored, and shop is untouched.
    const ls = cli(2, "app", "ls", "--json");
    assert.deepEqual(
      (JSON.parse(ls.out) as { apps: { name: string }[] }).apps.map((a) => a.name),
      ["shop"],
    );
  });

  it("kill -9 of the node running db: after the grace period db is placed on another node", {
    timeout: 90_000,
  }, async () => {
    const before = status(1);
    const db = before.instances.find((i) => i.id === "db.0");
    assert.ok(db?.node);
    // The instance's node as the registry names it (node-N runs in namespace N).
    const index = Number((db.hostname ?? "").replace("node-", ""));
    assert.ok(index >= 1, `db.0 is on ${db.node} (${db.hostname})`);
    const others = [1, 2, 3].filter((i) => i !== index);
    const killedAt = Date.now();
    await g.powerOff(index);
    progress(
      `node ${index} (db.0, ${before.instances.filter((i) => i.node === db.node).length} instances) killed`,
    );
    const after = await untilAssigned(others[0] as number, 60_000, (s) =>
      s.instances.every((i) => i.node !== db.node),
    );
    const seconds = (Date.now() - killedAt) / 1000;
    progress(
      `every instance on a live node again ${seconds.toFixed(1)} s after the kill (instance grace ${INSTANCE_GRACE_MS / 1000} s)`,
    );
    assert.ok(seconds * 1000 >= INSTANCE_GRACE_MS, "nothing moved before the grace was over");
    // The instances that were not on the dead node did not move.
    for (const i of before.instances.filter((x) => x.node !== db.node))
      assert.equal(after.instances.find((x) => x.id === i.id)?.node, i.node, `${i.id} stayed`);
    g.start(index);
    await g.until("the node back in the grid", formedWithVoters(3, 3), 60_000);
  });

  it("app destroy removes the application and, through the controller, its placements", async () => {
    const r = cli(3, "app", "destroy", "shop");
    assert.equal(r.code, 0, r.err);
    const gone = cli(1, "app", "status", "shop", "--json");
    assert.equal(gone.code, 1);
    assert.equal((JSON.parse(gone.out) as { error: { code: string } }).error.code, "no-such-app");
    const again = cli(1, "app", "destroy", "shop");
    assert.equal(again.code, 1);
    assert.match(again.err, /no application named shop/);
    // Level-based: the controller notices the application is gone and removes its placements.
    const deadline = Date.now() + 10_000;
    let left = -1;
    while (Date.now() < deadline) {
      const { placements } = await callGrid<{ placements: unknown[] }>(
        "GET",
        "/v1/placements",
        g.node(2).gridSocket,
      );
      left = placements.length;
      if (left === 0) break;
      await sleep(200);
    }
    assert.equal(left, 0, "no placement is left");
  });
});
