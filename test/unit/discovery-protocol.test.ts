/**
 * The mDNS behaviour of Discovery on a simulated link with a simulated clock: probing,
 * announcements, browse backoff, known-answer suppression, rate limits, refresh and expiry,
 * goodbyes, conflicts, legacy unicast and malformed input. No sockets, no real time.
 */
import assert from "node:assert/strict";
import type { RemoteInfo } from "node:dgram";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import dnsPacket, { type Packet as DnsPacket } from "dns-packet";
import type { Clock, Timer } from "../../src/discovery/clock.js";
import { Discovery, type DiscoveryOptions, type Peer } from "../../src/discovery/index.js";
import type { NetInterface } from "../../src/discovery/interfaces.js";
import { decodePacket, type Packet } from "../../src/discovery/parse.js";
import type {
  Destination,
  InterfaceChanges,
  TransportEvents,
} from "../../src/discovery/transport.js";

class FakeClock implements Clock {
  t = 1_000_000;
  private seq = 0;
  private timers: { at: number; seq: number; fn: () => void; live: boolean }[] = [];

  now() {
    return this.t;
  }

  after(ms: number, fn: () => void): Timer {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, live: true };
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.live = false;
      },
    };
  }

  /** Runs every timer due within ms, in order, letting promises settle in between. */
  async advance(ms: number) {
    const end = this.t + ms;
    for (;;) {
      this.timers = this.timers.filter((t) => t.live);
      const next = this.timers
        .filter((t) => t.at <= end)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      next.live = false;
      this.t = Math.max(this.t, next.at);
      next.fn();
      await new Promise((r) => setImmediate(r));
    }
    this.t = end;
    await new Promise((r) => setImmediate(r));
  }
}

interface Sent {
  t: number;
  from: string;
  to: string;
  packet: Packet;
}

/** One Ethernet segment: every datagram reaches every other member 1 ms later. */
class SimLink {
  readonly sent: Sent[] = [];
  readonly members = new Set<SimTransport>();

  constructor(readonly clock: FakeClock) {}

  deliver(
    from: SimTransport | undefined,
    fromAddress: string,
    bytes: Buffer,
    dest?: Destination,
    port = 5353,
  ) {
    this.sent.push({
      t: this.clock.now(),
      from: fromAddress,
      to: dest ? `${dest.address}:${dest.port}` : "group",
      packet: decodePacket(bytes),
    });
    if (dest) return; // unicast replies go to test-made queriers only
    for (const m of this.members) {
      if (m === from) continue;
      this.clock.after(1, () => m.receive(bytes, fromAddress, port));
    }
  }

  /** A datagram from a host that is not a Discovery (raw bytes, any source port). */
  inject(fromAddress: string, bytes: Buffer, port = 5353) {
    for (const m of this.members) this.clock.after(1, () => m.receive(bytes, fromAddress, port));
  }

  from(address: string) {
    return this.sent.filter((s) => s.from === address);
  }
}

class SimTransport extends EventEmitter<TransportEvents> {
  packetsSent = 0;
  sendErrors = 0;
  detached = false;
  readonly iface: NetInterface;

  constructor(
    readonly link: SimLink,
    readonly address: string,
  ) {
    super();
    this.iface = {
      name: "eth0",
      ipv4: address,
      subnets: [{ address, prefixLength: 24 }],
      addresses: { ipv4: [address], ipv6: [] },
    };
    link.members.add(this);
  }

  interfaces() {
    return [this.iface];
  }

  async start() {}

  async close() {
    this.link.members.delete(this);
  }

  async rescan(): Promise<InterfaceChanges> {
    return { added: [], removed: [], changed: [] };
  }

  async send(_iface: string, packet: DnsPacket, dest?: Destination) {
    if (this.detached) return true;
    this.packetsSent++;
    this.link.deliver(this, this.address, dnsPacket.encode(packet), dest);
    return true;
  }

  receive(data: Buffer, address: string, port: number) {
    if (this.detached) return;
    const rinfo: RemoteInfo = { address, port, family: "IPv4", size: data.length };
    this.emit("datagram", { iface: this.iface, data, rinfo });
  }
}

function seeded(seed: number) {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

interface SimNode {
  d: Discovery;
  t: SimTransport;
  address: string;
  events: { ev: string; t: number; peer?: Peer; reason?: string; name?: string }[];
}

async function node(
  link: SimLink,
  n: number,
  options: Partial<DiscoveryOptions> = {},
): Promise<SimNode> {
  const address = `10.0.0.${n}`;
  const t = new SimTransport(link, address);
  const d = new Discovery({
    advert: { nodeId: `node-${n}`, gridId: "", state: "booting", apiPort: 7443, caFingerprint: "" },
    hostname: `host${n}`,
    transport: t,
    clock: link.clock,
    random: seeded(n),
    ...options,
  });
  const events: SimNode["events"] = [];
  const now = () => link.clock.now();
  d.on("peer-up", (peer) => events.push({ ev: "peer-up", t: now(), peer }));
  d.on("peer-update", (peer) => events.push({ ev: "peer-update", t: now(), peer }));
  d.on("peer-down", (peer, reason) => events.push({ ev: "peer-down", t: now(), peer, reason }));
  d.on("announced", (name) => events.push({ ev: "announced", t: now(), name }));
  await d.start();
  return { d, t, address, events };
}

const isProbe = (p: Packet) => p.kind === "query" && p.authorities.length > 0;
const isAnnouncement = (p: Packet) =>
  p.kind === "response" && p.answers.some((r) => r.type === "PTR");
const browseQuery = (p: Packet) =>
  p.kind === "query" &&
  p.questions.some((q) => q.name === "_flatgrid._tcp.local" && q.type === "PTR");

describe("discovery protocol (simulated link and clock)", () => {
  it("probes three times 250 ms apart, then announces twice 1 s apart", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const start = clock.now();
    const a = await node(link, 1);
    await clock.advance(3000);
    const sent = link.from(a.address);
    const probes = sent.filter((s) => isProbe(s.packet));
    assert.equal(probes.length, 3);
    assert.ok(probes[0]!.t - start <= 250);
    assert.deepEqual(
      probes.slice(1).map((p, i) => p.t - probes[i]!.t),
      [250, 250],
    );
    const probe = probes[0]!.packet;
    assert.deepEqual(probe.questions, [{ name: "host1.local", type: "ANY", qu: false }]);
    assert.deepEqual(
      probe.authorities.map((r) => [r.name, r.type, r.type === "A" ? r.data : ""]),
      [["host1.local", "A", "10.0.0.1"]],
    );
    const announcements = sent.filter((s) => isAnnouncement(s.packet));
    assert.equal(announcements.length, 2);
    assert.equal(announcements[0]!.t - probes[2]!.t, 250);
    assert.equal(announcements[1]!.t - announcements[0]!.t, 1000);
    const first = announcements[0]!.packet.answers;
    assert.deepEqual(first.map((r) => `${r.type}${r.flush ? "!" : ""}`).sort(), [
      "A!",
      "PTR",
      "SRV!",
      "TXT!",
    ]);
    assert.equal(a.events.find((e) => e.ev === "announced")?.name, "host1");
    assert.equal(a.d.stats().conflicts, 0);
  });

  it("browses at 20-120 ms, then 1 s, 2 s, 4 s... with known answers", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const t0 = clock.now();
    await node(link, 1);
    const b = await node(link, 2, { announce: false });
    await clock.advance(40_000);
    const queries = link.from(b.address).filter((s) => browseQuery(s.packet));
    const first = queries[0]!.t - t0;
    assert.ok(first >= 20 && first <= 120, `first query after ${first} ms`);
    const gaps = queries.slice(1, 6).map((q, i) => q.t - queries[i]!.t);
    assert.deepEqual(gaps, [1000, 2000, 4000, 8000, 16000]);
    // Once node 1 is known, the queries list it as a known answer, and node 1 stays quiet.
    const later = queries.filter((q) => q.t - t0 > 5000);
    assert.ok(later.length >= 2);
    for (const q of later) {
      assert.deepEqual(
        q.packet.answers.map((r) => (r.type === "PTR" ? r.data : "")),
        ["node-1._flatgrid._tcp.local"],
      );
    }
    const answersToLater = link
      .from("10.0.0.1")
      .filter(
        (s) => s.packet.kind === "response" && later.some((q) => s.t > q.t && s.t - q.t < 200),
      );
    assert.deepEqual(answersToLater, []);
    assert.equal(b.d.peers().length, 1);
  });

  it("answers a query once per second per record (rate limit)", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1);
    await clock.advance(5000);
    const query = dnsPacket.encode({
      type: "query",
      questions: [{ name: "host1.local", type: "A" }],
    });
    const before = link.from(a.address).length;
    link.inject("10.0.0.50", query);
    await clock.advance(300);
    link.inject("10.0.0.51", query);
    await clock.advance(300);
    const answered = link.from(a.address).slice(before);
    assert.equal(answered.length, 1, "the second query within 1 s is not answered");
    assert.equal(a.d.stats().rateLimited, 1);
    await clock.advance(600);
    link.inject("10.0.0.52", query);
    await clock.advance(50);
    assert.equal(link.from(a.address).length - before, 2, "answered again after 1 s");
  });

  it("answers PTR queries 20-120 ms late, SRV at once, legacy queries by unicast", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1);
    await clock.advance(5000);
    let from = link.sent.length;
    link.inject(
      "10.0.0.50",
      dnsPacket.encode({
        type: "query",
        questions: [{ name: "_flatgrid._tcp.local", type: "PTR" }],
      }),
    );
    const asked = clock.now() + 1;
    await clock.advance(200);
    const ptrAnswer = link.sent.slice(from).find((s) => s.from === a.address);
    assert.ok(ptrAnswer && ptrAnswer.t - asked >= 20 && ptrAnswer.t - asked <= 120);
    assert.deepEqual(ptrAnswer.packet.additionals.map((r) => r.type).sort(), ["A", "SRV", "TXT"]);
    // The TXT just went out as an additional record: ask for it after the 1 s rate limit.
    await clock.advance(1000);
    from = link.sent.length;
    link.inject(
      "10.0.0.50",
      dnsPacket.encode({
        type: "query",
        questions: [{ name: "node-1._flatgrid._tcp.local", type: "TXT" }],
      }),
    );
    await clock.advance(50);
    const txtAnswer = link.sent.slice(from).find((s) => s.from === a.address);
    assert.equal(txtAnswer?.t, clock.now() - 49);
    // A one-shot query from another port gets a unicast answer: id and question echoed, TTL <= 10.
    from = link.sent.length;
    link.inject(
      "10.0.0.50",
      dnsPacket.encode({
        type: "query",
        id: 4242,
        questions: [{ name: "host1.local", type: "A" }],
      }),
      40000,
    );
    await clock.advance(50);
    const legacy = link.sent.slice(from).find((s) => s.from === a.address);
    assert.equal(legacy?.to, "10.0.0.50:40000");
    assert.equal(legacy?.packet.id, 4242);
    assert.deepEqual(
      legacy?.packet.questions.map((q) => q.name),
      ["host1.local"],
    );
    assert.ok(legacy?.packet.answers.every((r) => r.ttl <= 10 && !r.flush));
  });

  it("sees peers, reports updates, and drops a peer on its goodbye", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1);
    const b = await node(link, 2);
    await clock.advance(3000);
    const up = b.events.find((e) => e.ev === "peer-up");
    assert.equal(up?.peer?.nodeId, "node-1");
    assert.equal(up?.peer?.host, "host1.local");
    assert.deepEqual(up?.peer?.addresses, [{ address: "10.0.0.1", family: 4, interface: "eth0" }]);
    // An update re-announces the TXT, twice, 1 s apart.
    const from = link.sent.length;
    a.d.update({ state: "ready", gridId: "grid-1" });
    await clock.advance(3000);
    const txts = link.sent
      .slice(from)
      .filter((s) => s.from === a.address && s.packet.answers.some((r) => r.type === "TXT"));
    assert.equal(txts.length, 2);
    assert.equal(txts[1]!.t - txts[0]!.t, 1000);
    const upd = b.events.filter((e) => e.ev === "peer-update");
    assert.equal(upd.length, 1);
    assert.equal(upd[0]?.peer?.advert.state, "ready");
    assert.equal(upd[0]?.peer?.advert.gridId, "grid-1");
    // A clean stop: every record with TTL 0; the peer goes at once.
    const stopAt = clock.now();
    await a.d.stop();
    const bye = link.from(a.address).at(-1)!.packet;
    assert.deepEqual(bye.answers.map((r) => r.type).sort(), ["A", "PTR", "SRV", "TXT"]);
    assert.ok(bye.answers.every((r) => r.ttl === 0));
    await clock.advance(10);
    const down = b.events.find((e) => e.ev === "peer-down");
    assert.equal(down?.reason, "goodbye");
    assert.ok(down!.t - stopAt <= 2);
    assert.deepEqual(b.d.peers(), []);
  });

  it("never re-announces an older advert after a newer one", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1);
    const b = await node(link, 2);
    await clock.advance(3000);
    const from = link.sent.length;
    a.d.update({ state: "joining" });
    await clock.advance(200);
    a.d.update({ state: "ready" });
    await clock.advance(3000);
    const states = link.sent
      .slice(from)
      .filter((s) => s.from === a.address)
      .flatMap((s) => s.packet.answers)
      .filter((r) => r.type === "TXT")
      .map((r) => (r.type === "TXT" ? r.data.map(String).find((x) => x.startsWith("state=")) : ""));
    assert.deepEqual(states, ["state=joining", "state=ready", "state=ready"]);
    assert.equal(b.d.peers()[0]?.advert.state, "ready");
  });

  it("says goodbye for its service records while probing a new name", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1, { hostname: "mine" });
    await clock.advance(3000);
    // Another host claims our name with its own address: we move to mine-2 and probe it.
    link.inject(
      "10.0.0.9",
      dnsPacket.encode({
        type: "response",
        answers: [{ name: "mine.local", type: "A", ttl: 120, flush: true, data: "10.0.0.9" }],
      }),
    );
    await clock.advance(5);
    assert.equal(a.d.hostname, "mine-2");
    await a.d.stop();
    const bye = link.from(a.address).at(-1)!.packet;
    assert.deepEqual(bye.answers.map((r) => `${r.type} ${r.ttl}`).sort(), [
      "PTR 0",
      "SRV 0",
      "TXT 0",
    ]);
    const srv = bye.answers.find((r) => r.type === "SRV");
    assert.equal(
      srv?.type === "SRV" ? srv.data.target : "",
      "mine.local",
      "the SRV the others cached",
    );
  });

  it("refreshes at 80-95 % of the TTL and drops a silent peer when its TTL ends", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1, { ttl: 10, hostTtl: 10 });
    const b = await node(link, 2);
    await clock.advance(3000);
    assert.equal(b.d.peers().length, 1);
    // While node 1 answers, the refreshes keep it: no peer-down in a minute.
    await clock.advance(60_000);
    assert.equal(b.events.filter((e) => e.ev === "peer-down").length, 0);
    const refreshes = link
      .from(b.address)
      .filter(
        (s) =>
          s.packet.kind === "query" && s.packet.questions.some((q) => q.name.startsWith("node-1")),
      );
    assert.ok(refreshes.length >= 5, `${refreshes.length} refresh queries`);
    // Then node 1 dies without a goodbye.
    const { expiresAt } = b.d.peers()[0]!;
    const lastSeen = expiresAt - 10_000;
    a.t.detached = true;
    const from = link.sent.length;
    await clock.advance(15_000);
    const down = b.events.find((e) => e.ev === "peer-down");
    assert.equal(down?.reason, "expired");
    assert.equal(down!.t, expiresAt, "dropped when its TTL ends, not before");
    // It asked again for each record from 80 % of its TTL on (each record has its own
    // 80/85/90/95 % points; they were last received within a few ms of each other).
    const asked = link.sent
      .slice(from)
      .filter(
        (s) =>
          s.from === b.address &&
          s.packet.questions.some((q) => q.name.startsWith("node-1") || q.name === "host1.local"),
      );
    const fractions = asked.map((s) => (s.t - lastSeen) / 10_000);
    assert.ok(fractions.length >= 4, `${fractions.length} queries`);
    assert.ok(
      fractions.every((f) => f >= 0.8 && f < 1.1),
      fractions.join(" "),
    );
    const asks = new Set(asked.flatMap((s) => s.packet.questions.map((q) => q.type)));
    // (The PTR is refreshed too, by the service-wide PTR question; the minute above shows it.)
    assert.deepEqual([...asks].sort(), ["A", "SRV", "TXT"]);
  });

  it("renames a late node that claims a name in use", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1, { hostname: "same" });
    await clock.advance(3000);
    const b = await node(link, 2, { hostname: "same" });
    await clock.advance(5000);
    assert.equal(a.d.hostname, "same");
    assert.equal(b.d.hostname, "same-2");
    assert.equal(b.d.stats().conflicts, 1);
    assert.deepEqual(
      b.events.filter((e) => e.ev === "announced").map((e) => e.name),
      ["same-2"],
    );
    assert.equal(a.d.peers()[0]?.host, "same-2.local");
  });

  it("settles simultaneous probes for one name by tie-break", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1, { hostname: "same", probe: { initialDelayMaxMs: 0 } });
    const b = await node(link, 2, { hostname: "same", probe: { initialDelayMaxMs: 0 } });
    await clock.advance(8000);
    // 10.0.0.2 sorts after 10.0.0.1: node 2 keeps the name.
    assert.equal(b.d.hostname, "same");
    assert.equal(a.d.hostname, "same-2");
    assert.equal(b.events.filter((e) => e.ev === "announced").length, 1);
  });

  it("counts malformed packets and carries on", async () => {
    const clock = new FakeClock();
    const link = new SimLink(clock);
    const a = await node(link, 1);
    await clock.advance(3000);
    link.inject("10.0.0.66", Buffer.from("certainly not DNS"));
    link.inject("10.0.0.66", Buffer.alloc(12, 0xff));
    const badTxt = dnsPacket.encode({
      type: "response",
      answers: [
        {
          name: "evil._flatgrid._tcp.local",
          type: "TXT",
          ttl: 120,
          data: ["v=1", "id=evil", "grid=", "state=x", "api=70000", "ca="],
        },
      ],
    });
    link.inject("10.0.0.66", badTxt);
    // A response from a port other than 5353 is ignored (RFC 6762 6).
    link.inject("10.0.0.66", dnsPacket.encode({ type: "response", answers: [] }), 1234);
    await clock.advance(100);
    const s = a.d.stats();
    assert.equal(s.malformed, 3);
    assert.equal(s.ignored, 1);
    assert.equal(s.internalErrors, 0);
    assert.match(s.lastMalformed ?? "", /API port 70000/);
    assert.deepEqual(a.d.peers(), []);
  });
});
