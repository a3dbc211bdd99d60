/**
 * Discovery between real processes in real network namespaces with real multicast: each
 * node runs dist/test/cluster/discovery-node.js in its own namespace on a private bridge.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { DiscoveryStats } from "../../src/discovery/index.js";
import {
  Cluster,
  type JsonLine,
  listNamespaces,
  type NodeProcess,
  running,
  sleep,
} from "./netns.js";

const NODE_SCRIPT = fileURLToPath(new URL("./discovery-node.js", import.meta.url));
const GARBAGE_SCRIPT = fileURLToPath(new URL("./garbage-responder.js", import.meta.url));
const TIMEOUT = 30_000;
/** Node ids of the adverts with bad values that the garbage responder sends. */
const BAD_IDS = [
  "absurd-port",
  "bad-api",
  "non-utf8",
  "bad-ca",
  "wrong-id",
  "someone-else",
  "no-version",
  "huge-state",
  "opcode",
];

interface PeerLine {
  nodeId: string;
  host: string;
  advert: { nodeId: string; gridId: string; state: string; apiPort: number; caFingerprint: string };
  addresses: { address: string; family: number; interface: string }[];
  lastSeen: number;
  expiresAt: number;
}

interface NodeSpec {
  node: number;
  nodeId?: string;
  hostname: string;
  gridId?: string;
  state?: string;
  apiPort?: number;
  caFingerprint?: string;
  ttl?: number;
  hostTtl?: number;
  rescanMs?: number;
}

let cluster: Cluster;
const started = Date.now();
const log = (msg: string) =>
  console.log(`  [${((Date.now() - started) / 1000).toFixed(1)} s] ${msg}`);

function start(
  spec: NodeSpec,
): NodeProcess & { spec: Required<Pick<NodeSpec, "nodeId">> & NodeSpec } {
  const full = { ...spec, nodeId: spec.nodeId ?? randomUUID() };
  const p = cluster.spawnNode(
    spec.node,
    NODE_SCRIPT,
    ["--run", JSON.stringify(full)],
    spec.hostname,
  );
  return Object.assign(p, { spec: full });
}

/** The peers a node reports now, replayed from its peer events. */
function peersOf(p: NodeProcess): Map<string, PeerLine> {
  const peers = new Map<string, PeerLine>();
  for (const l of p.lines) {
    const peer = l.peer as PeerLine | undefined;
    if (!peer) continue;
    if (l.ev === "peer-up" || l.ev === "peer-update") peers.set(peer.nodeId, peer);
    if (l.ev === "peer-down") peers.delete(peer.nodeId);
  }
  return peers;
}

async function until<T>(what: string, check: () => T | undefined | false, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(25);
  }
}

/** Whether `observer` sees `target` with its advert and its address on network 0. */
function seesRight(observer: NodeProcess, target: ReturnType<typeof start>, network = 0): boolean {
  const peer = peersOf(observer).get(target.spec.nodeId);
  if (!peer) return false;
  const s = target.spec;
  const addr = `10.213.${network}.${s.node}`;
  return (
    peer.advert.gridId === (s.gridId ?? "") &&
    peer.advert.state === (s.state ?? "booting") &&
    peer.advert.apiPort === (s.apiPort ?? 7443) &&
    peer.advert.caFingerprint === (s.caFingerprint ?? "") &&
    peer.addresses.some((a) => a.address === addr)
  );
}

async function stopAll(nodes: NodeProcess[]) {
  for (const n of nodes) if (!n.exit) n.send({ cmd: "stop" });
  await Promise.all(nodes.map((n) => Promise.race([n.exited, sleep(3000)])));
  for (const n of nodes) n.kill("SIGKILL");
}

async function stats(p: NodeProcess): Promise<DiscoveryStats> {
  const r = await p.request({ cmd: "stats" });
  return r.stats as DiscoveryStats;
}

describe("discovery in network namespaces", { timeout: 120_000 }, () => {
  before(() => {
    cluster = Cluster.create({
      nodes: 7,
      networks: [[0], [0], [0], [0], [0], [0, 1], [1]],
      log,
    });
  });

  after(async () => {
    await cluster?.destroy();
    const left = listNamespaces().filter((n) => n.startsWith(cluster.id));
    assert.deepEqual(left, [], "namespaces left behind");
    log("cluster removed");
  });

  it("5 nodes started at once all see each other", { timeout: TIMEOUT }, async () => {
    const grid = randomUUID();
    const ca = "0123456789abcdef".repeat(4);
    const nodes = [1, 2, 3, 4, 5].map((i) =>
      start({
        node: i,
        hostname: `node${i}`,
        gridId: i % 2 === 0 ? grid : "",
        caFingerprint: i % 2 === 0 ? ca : "",
        state: i === 5 ? "ready" : "booting",
        apiPort: 7440 + i,
      }),
    );
    const t0 = Date.now();
    try {
      await until("every node sees the other 4 with the right TXT fields and address", () =>
        nodes.every((o) => nodes.every((t) => t === o || seesRight(o, t))),
      );
      const ms = Date.now() - t0;
      log(`5 nodes: full view after ${ms} ms from spawn`);
      assert.ok(ms < 8000, `took ${ms} ms`);
      for (const n of nodes) {
        assert.equal(peersOf(n).size, 4, `${n.name} sees exactly 4 peers`);
        const s = await stats(n);
        assert.equal(s.malformed, 0);
        assert.equal(s.internalErrors, 0);
        assert.equal(s.conflicts, 0);
      }
      const announced = nodes.map((n) => n.events("announced")[0]?.hostname);
      assert.deepEqual(announced, ["node1", "node2", "node3", "node4", "node5"]);
    } finally {
      await stopAll(nodes);
    }
  });

  it("a clean stop sends goodbyes; a kill -9 expires after the TTL", {
    timeout: TIMEOUT,
  }, async () => {
    const observers = [1, 2].map((i) => start({ node: i, hostname: `obs${i}` }));
    const spec = { node: 3, hostname: "target", nodeId: randomUUID(), ttl: 3, hostTtl: 3 };
    let target = start(spec);
    try {
      await until("observers see the target", () => observers.every((o) => seesRight(o, target)));
      const stopAt = Date.now();
      target.send({ cmd: "stop" });
      const downs = await Promise.all(
        observers.map((o) =>
          o.waitFor(
            "peer-down",
            (l) => l.ev === "peer-down" && (l.peer as PeerLine).nodeId === spec.nodeId,
          ),
        ),
      );
      for (const d of downs) {
        assert.equal(d.reason, "goodbye");
        assert.ok((d.t ?? 0) - stopAt < 1500, `dropped ${(d.t ?? 0) - stopAt} ms after stop`);
      }
      log(`goodbye: dropped after ${downs.map((d) => (d.t ?? 0) - stopAt).join(", ")} ms`);
      await target.exited;

      target = start(spec);
      const mark = observers.map((o) => o.lines.length);
      await until("observers see the target again", () =>
        observers.every((o, k) =>
          o.lines
            .slice(mark[k])
            .some((l) => l.ev === "peer-up" && (l.peer as PeerLine).nodeId === spec.nodeId),
        ),
      );
      // Let a refresh cycle happen (80 % of 3 s) so that expiry follows refreshes.
      await sleep(2500);
      const killedAt = Date.now();
      target.kill("SIGKILL");
      await target.exited;
      assert.ok(!running(target.pid));
      const expired = await Promise.all(
        observers.map((o, k) =>
          o.waitFor(
            "peer-down after kill",
            (l) => l.ev === "peer-down" && (l.peer as PeerLine).nodeId === spec.nodeId,
            8000,
            mark[k],
          ),
        ),
      );
      for (const d of expired) {
        const peer = d.peer as PeerLine;
        const t = d.t ?? 0;
        assert.equal(d.reason, "expired");
        // Not before its records' TTL ran out (they were refreshed until the kill)...
        assert.ok(t >= peer.expiresAt - 5, `dropped ${peer.expiresAt - t} ms before expiry`);
        assert.ok(peer.expiresAt - 3000 <= killedAt, "records received after the kill?");
        // ...and soon after.
        assert.ok(t - peer.expiresAt < 500, `dropped ${t - peer.expiresAt} ms after expiry`);
        assert.ok(t - killedAt <= 3000 + 500, `dropped ${t - killedAt} ms after kill`);
      }
      log(
        `kill -9: dropped ${expired.map((d) => (d.t ?? 0) - killedAt).join(", ")} ms after the kill, ` +
          `${expired.map((d) => (d.t ?? 0) - ((d.peer as PeerLine).expiresAt - 3000)).join(", ")} ms after its records were last refreshed (TTL 3 s)`,
      );
    } finally {
      await stopAll([...observers, target]);
    }
  });

  it("two nodes with one host name end up with distinct names", { timeout: TIMEOUT }, async () => {
    const a = start({ node: 1, hostname: "twin" });
    const b = start({ node: 2, hostname: "twin" });
    const nodes = [a, b];
    try {
      const names = await Promise.all(
        nodes.map((n) => n.waitFor("announced", (l) => l.ev === "announced", 10_000)),
      );
      const hostnames = names.map((l) => String(l.hostname)).sort();
      log(`same host name: announced as ${hostnames.join(" and ")}`);
      assert.deepEqual(hostnames, ["twin", "twin-2"]);
      await until("each sees the other under its own name", () =>
        nodes.every((n, k) => {
          const other = nodes[1 - k]!;
          const peer = peersOf(n).get(other.spec.nodeId);
          const otherName = other.events("announced").at(-1)?.hostname;
          return peer?.host === `${otherName}.local`;
        }),
      );
      // A third one, later, probes twin, then twin-2, and settles on twin-3.
      const c = start({ node: 3, hostname: "twin" });
      nodes.push(c);
      const late = await c.waitFor("announced", (l) => l.ev === "announced", 15_000);
      assert.equal(late.hostname, "twin-3");
      assert.equal(c.events("conflict").length, 2);
      // The first two kept their names.
      for (const n of [a, b]) assert.equal(n.events("announced").length, 1);
    } finally {
      await stopAll(nodes);
    }
  });

  it("an advert update reaches the others", { timeout: TIMEOUT }, async () => {
    const a = start({ node: 1, hostname: "upd1" });
    const b = start({ node: 2, hostname: "upd2" });
    try {
      await until("they see each other", () => seesRight(a, b) && seesRight(b, a));
      const grid = randomUUID();
      const ca = "f".repeat(64);
      const t0 = Date.now();
      const from = b.lines.length;
      await a.request({
        cmd: "update",
        patch: { state: "ready", gridId: grid, caFingerprint: ca },
      });
      const upd = await b.waitFor(
        "peer-update",
        (l) => l.ev === "peer-update" && (l.peer as PeerLine).advert.state === "ready",
        5000,
        from,
      );
      const peer = upd.peer as PeerLine;
      assert.equal(peer.advert.gridId, grid);
      assert.equal(peer.advert.caFingerprint, ca);
      assert.equal(peer.nodeId, a.spec.nodeId);
      log(`update seen after ${(upd.t ?? 0) - t0} ms`);
      assert.ok((upd.t ?? 0) - t0 < 1500);
    } finally {
      await stopAll([a, b]);
    }
  });

  it("a garbage responder crashes no one and a forged advert is just a peer", {
    timeout: TIMEOUT,
  }, async () => {
    const nodes = [1, 2, 3].map((i) => start({ node: i, hostname: `calm${i}` }));
    try {
      await until("the nodes see each other", () =>
        nodes.every((o) => nodes.every((t) => t === o || seesRight(o, t))),
      );
      const garbage = cluster.spawnNode(
        6,
        GARBAGE_SCRIPT,
        [
          "--run",
          JSON.stringify({
            rounds: 15,
            intervalMs: 80,
            from: "10.213.0.6",
            forgedAddress: "10.213.0.200",
          }),
        ],
        "garbage",
      );
      const done = await garbage.waitFor("garbage sent", (l) => l.ev === "done", 15_000);
      await garbage.exited;
      await sleep(300);
      log(`garbage responder sent ${done.count} packets`);
      for (const n of nodes) {
        assert.equal(n.exit, undefined, `${n.name} still runs`);
        const s = await stats(n);
        assert.ok(s.malformed > 0, `${n.name} counted malformed packets`);
        assert.equal(s.internalErrors, 0, `${n.name} had no internal errors`);
        assert.ok(s.ignored > 0, `${n.name} ignored the non-zero opcode`);
        const peers = peersOf(n);
        const forged = peers.get("forged-0000-4000-8000-000000000001");
        assert.ok(forged, `${n.name} reports the forged advert`);
        assert.equal(forged.advert.gridId, "evilgrid");
        assert.equal(forged.advert.state, "ready");
        assert.deepEqual(
          forged.addresses.map((a) => a.address),
          ["10.213.0.200"],
        );
        // The real peers are still there, and none of the bad adverts got through. (A
        // bit-flipped copy of a valid advert may well still be valid: that is just a peer.)
        for (const o of nodes) if (o !== n) assert.ok(peers.has(o.spec.nodeId));
        for (const bad of BAD_IDS) assert.ok(!peers.has(bad), `${n.name} refused ${bad}`);
        log(
          `${n.name}: malformed=${s.malformed} ignored=${s.ignored} received=${s.packetsReceived}`,
        );
      }
    } finally {
      await stopAll(nodes);
    }
  });

  it("loses the other side of a partition, finds it again after healing", {
    timeout: TIMEOUT,
  }, async () => {
    // Short host TTLs: a peer whose addresses expire is down; its PTR, SRV and TXT stay
    // cached, and the browser keeps asking for its addresses (1 s, 2 s, 4 s...).
    const nodes = [1, 2, 3].map((i) =>
      start({ node: i, hostname: `part${i}`, ttl: 60, hostTtl: 2, rescanMs: 500 }),
    );
    const [n1, n2, n3] = nodes as [
      ReturnType<typeof start>,
      ReturnType<typeof start>,
      ReturnType<typeof start>,
    ];
    try {
      await until("the nodes see each other", () =>
        nodes.every((o) => nodes.every((t) => t === o || seesRight(o, t))),
      );
      const cutAt = Date.now();
      cluster.partition([[1, 2], [3]]);
      await until(
        "each side drops the other",
        () =>
          !peersOf(n3).has(n1.spec.nodeId) &&
          !peersOf(n3).has(n2.spec.nodeId) &&
          !peersOf(n1).has(n3.spec.nodeId) &&
          !peersOf(n2).has(n3.spec.nodeId),
        6000,
      );
      log(`partition: both sides dropped the other after ${Date.now() - cutAt} ms`);
      assert.ok(seesRight(n1, n2) && seesRight(n2, n1), "1 and 2 are on the same side");
      const healAt = Date.now();
      cluster.heal();
      await until(
        "all see each other again",
        () => nodes.every((o) => nodes.every((t) => t === o || seesRight(o, t))),
        10_000,
      );
      log(`healed: full view again after ${Date.now() - healAt} ms`);
      // A new address on node 1 is found by its rescan and announced.
      const addAt = Date.now();
      cluster.exec(1, "ip", "addr", "add", "10.213.0.101/24", "dev", "eth0");
      await until(
        "node 2 sees node 1's new address",
        () =>
          peersOf(n2)
            .get(n1.spec.nodeId)
            ?.addresses.some((a) => a.address === "10.213.0.101"),
        6000,
      );
      log(`new address seen after ${Date.now() - addAt} ms`);
      assert.ok(seesRight(n2, n1), "and the old one is still there");
    } finally {
      cluster.heal();
      try {
        cluster.exec(1, "ip", "addr", "del", "10.213.0.101/24", "dev", "eth0");
      } catch {}
      await stopAll(nodes);
    }
  });

  it("a node on two networks announces each network's own address there", {
    timeout: TIMEOUT,
  }, async () => {
    const left = start({ node: 1, hostname: "left" });
    // A second process in the same namespace as "left" (sockets share port 5353).
    const neighbour = start({ node: 1, hostname: "neighbour" });
    const both = start({ node: 6, hostname: "both" });
    const right = start({ node: 7, hostname: "right" });
    const all = [left, neighbour, both, right];
    try {
      await until(
        "every expected pair is seen",
        () =>
          seesRight(left, both, 0) &&
          seesRight(right, both, 1) &&
          seesRight(both, left, 0) &&
          seesRight(both, right, 1) &&
          seesRight(both, neighbour, 0) &&
          seesRight(left, neighbour, 0) &&
          seesRight(neighbour, left, 0),
      );
      await sleep(1500);
      const v4 = (p: PeerLine | undefined) =>
        (p?.addresses ?? [])
          .filter((a) => a.family === 4)
          .map((a) => `${a.interface}:${a.address}`);
      assert.deepEqual(v4(peersOf(left).get(both.spec.nodeId)), ["eth0:10.213.0.6"]);
      assert.deepEqual(v4(peersOf(right).get(both.spec.nodeId)), ["eth0:10.213.1.6"]);
      assert.deepEqual(v4(peersOf(both).get(right.spec.nodeId)), ["eth1:10.213.1.7"]);
      assert.deepEqual(v4(peersOf(both).get(left.spec.nodeId)), ["eth0:10.213.0.1"]);
      assert.equal(peersOf(left).has(right.spec.nodeId), false, "left and right share no network");
      assert.equal(peersOf(right).has(left.spec.nodeId), false);
      assert.equal(peersOf(both).size, 3);
      const started = (await both.waitFor("started", (l: JsonLine) => l.ev === "started"))
        .interfaces;
      assert.deepEqual(started, ["eth0", "eth1"]);
    } finally {
      await stopAll(all);
    }
  });
});
