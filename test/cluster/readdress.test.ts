/**
 * A member that comes back with another address (a new static address, another DHCP lease):
 * its certificate and its etcd member's peer URL name the old one. The grid follows it: a
 * peer signs it a certificate for its new address, its etcd member's peer URL is updated
 * (etcd's own member list says so), and the grid keeps its quorum through it. A grid of one
 * node signs its own.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ControlClient } from "../../src/os/index.js";
import { formed, formedWithVoters, GridCluster } from "./grid-harness.js";
import { sweepStale } from "./netns.js";

function progress(msg: string): void {
  process.stderr.write(`  readdress: ${msg}\n`);
}

/** Moves node `index` to `address` and restarts its grid service there, as its supervisor would. */
async function move(g: GridCluster, index: number, address: string): Promise<void> {
  const link = g.cluster.node(index).links[0];
  assert.ok(link);
  // The old address gone, then the new one, as the node's network re-apply does (the other
  // way round, the new one would be a secondary, and go with the primary).
  g.cluster.exec(index, "ip", "addr", "del", `${link.address}/24`, "dev", link.iface);
  g.cluster.exec(index, "ip", "addr", "add", `${address}/24`, "dev", link.iface);
  const table = JSON.parse(readFileSync(join(g.node(index).dir, "services.json"), "utf8")) as {
    services: { name: string; command: string[] }[];
  };
  const grid = table.services.find((s) => s.name === "grid");
  assert.ok(grid);
  grid.command = grid.command.map((a) => (a.startsWith("--address=") ? `--address=${address}` : a));
  // A new definition restarts the service with it.
  await new ControlClient(g.node(index).socket).put("/v1/services/grid", grid);
}

const addressOf = (g: GridCluster, index: number) => g.status(index).then((s) => s?.address);
const ETCD_READER = fileURLToPath(new URL("./etcd-history.js", import.meta.url));

/** etcd's member list as node `index` reads it from its own address's etcd. */
async function members(g: GridCluster, index: number, address: string) {
  const p = g.cluster.spawnNode(index, ETCD_READER, [
    "--run",
    JSON.stringify({
      stateDir: `${g.node(index).dir}/state`,
      endpoint: `https://${address}:2379`,
      members: true,
    }),
  ]);
  const line = await p.waitFor("the member list", (l) => l.ev === "members", 20_000);
  return line.members as { name: string; peerUrls: string[]; learner: boolean }[];
}

describe("a member that comes back with another address", { concurrency: false }, () => {
  const made: GridCluster[] = [];
  after(async () => {
    for (const c of made) await c.destroy();
  });

  it("a voter of 3 moves: a peer signs it a new certificate, its etcd member follows, and the grid keeps its quorum through it", async () => {
    sweepStale();
    // A dead node's etcd member is removed after the grace: longer here than the move takes,
    // or the member would be removed and added again instead of following its node.
    const g = GridCluster.create({ nodes: 3, deadGraceMs: 30_000 });
    made.push(g);
    g.startAll();
    const all = await g.until("3 nodes, 3 voters", formedWithVoters(3, 3), 90_000);
    // A voter that is not the controller: moving the controller would also move the
    // controller role, which is another test's business.
    const mover = [2, 3].find((i) => all[i - 1]?.term === null) ?? 2;
    const other = mover === 2 ? 3 : 2;
    const to = `10.213.0.1${mover}`;
    await move(g, mover, to);
    await g.until(
      `node-${mover} back at ${to}, in the one grid`,
      (all) =>
        formed(3)(all) &&
        all.every((s) => s?.nodes.find((n) => n.hostname === `node-${mover}`)?.address === to),
      90_000,
    );
    assert.equal(await addressOf(g, mover), to);
    const log = g.gridLogs(200);
    assert.match(
      log,
      new RegExp(
        `a new grid certificate for this node's address 10\\.213\\.0\\.1${mover} \\(was 10\\.213\\.0\\.${mover}, 127\\.0\\.0\\.1\\), signed through node at 10\\.213\\.0\\.\\d`,
      ),
    );
    assert.match(
      log,
      new RegExp(
        `etcd: this node's member moved to https://10\\.213\\.0\\.1${mover}:2380 \\(was https://10\\.213\\.0\\.${mover}:2380\\)`,
      ),
    );
    // Followed, not removed and added again.
    assert.doesNotMatch(log, /membership: removed voter/);
    // etcd's own view, read from the moved node's etcd at its new address.
    const moved = await g.status(mover);
    const list = await members(g, mover, to);
    assert.deepEqual(list.find((m) => m.name === moved?.nodeId)?.peerUrls, [`https://${to}:2380`]);
    assert.equal(list.filter((m) => !m.learner).length, 3);
    progress(`node-${mover} has a certificate for ${to} and its etcd member moved there`);
    // Its etcd member is one of the two that must stay for a quorum: the third node loses
    // power.
    await g.powerOff(other);
    // Its record leaves the registry when its lease expires, which only a quorum of the
    // other two (one at its new address) can commit.
    await g.until(
      `node-${other} gone from the registry of node-1 and node-${mover}`,
      (all) => all.every((s) => s?.phase === "member" && s.quorum && s.nodes.length === 2),
      60_000,
      [1, mover],
    );
    assert.equal((await g.status(mover))?.etcdRole, "voter");
    progress(`node-${other} off: node-1 and node-${mover} keep the quorum`);
  });

  it("a grid of one node moves: it signs its own certificate with the CA key its etcd keeps", async () => {
    sweepStale();
    const g = GridCluster.create({ nodes: 1 });
    made.push(g);
    g.startAll();
    await g.until("a 1-node grid", formed(1), 60_000);
    await move(g, 1, "10.213.0.21");
    await g.until(
      "node-1 back at 10.213.0.21 with a quorum",
      (all) => formed(1)(all) && all[0]?.address === "10.213.0.21",
      90_000,
    );
    const log = g.gridLogs(200);
    assert.match(log, /signed through its own etcd's CA key/);
    assert.match(log, /etcd: this node's member moved to https:\/\/10\.213\.0\.21:2380/);
    assert.equal((await g.status(1))?.nodes[0]?.address, "10.213.0.21");
  });
});
