import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecordCache } from "../../src/discovery/cache.js";
import type { MdnsRecord } from "../../src/discovery/records.js";

const A = (data: string, ttl = 120, flush = true): MdnsRecord => ({
  name: "node1.local",
  type: "A",
  ttl,
  flush,
  data,
});
const PTR = (instance: string, ttl = 100): MdnsRecord => ({
  name: "_flatgrid._tcp.local",
  type: "PTR",
  ttl,
  flush: false,
  data: `${instance}._flatgrid._tcp.local`,
});

/** A cache without jitter: refresh points fall exactly at 80/85/90/95 %. */
const exact = () => new RecordCache({ random: () => 0 });

describe("discovery record cache", () => {
  it("expires a record after its TTL, not before", () => {
    const c = exact();
    assert.equal(c.add("eth0", PTR("a", 10), 1_000), "new");
    assert.deepEqual(c.tick(10_999).expired, []);
    assert.equal(c.find("_flatgrid._tcp.local", "PTR").length, 1);
    const { expired } = c.tick(11_000);
    assert.equal(expired.length, 1);
    assert.equal(c.size, 0);
  });

  it("asks for refreshes at 80, 85, 90 and 95 % of the TTL", () => {
    const c = exact();
    c.add("eth0", PTR("a", 100), 0);
    const dueAt: number[] = [];
    let deadline = c.nextDeadline();
    while (deadline !== undefined && deadline < 100_000) {
      if (c.tick(deadline).due.length > 0) dueAt.push(deadline);
      deadline = c.nextDeadline();
    }
    assert.deepEqual(dueAt, [80_000, 85_000, 90_000, 95_000]);
    assert.equal(c.nextDeadline(), 100_000);
  });

  it("adds up to 2 % jitter to the refresh points", () => {
    const c = new RecordCache({ random: () => 0.999 });
    c.add("eth0", PTR("a", 100), 0);
    // 80 % + 1.998 % of 100 s.
    assert.equal(c.tick(81_990).due.length, 0);
    assert.equal(c.tick(81_998).due.length, 1);
  });

  it("starts over when the record is received again", () => {
    const c = exact();
    c.add("eth0", PTR("a", 100), 0);
    assert.equal(c.tick(80_000).due.length, 1);
    assert.equal(c.add("eth0", PTR("a", 100), 80_500), "refreshed");
    assert.equal(c.tick(99_000).due.length, 0);
    assert.equal(c.tick(100_000).expired.length, 0);
    assert.equal(c.tick(160_500).due.length, 1);
    assert.equal(c.tick(180_500).expired.length, 1);
  });

  it("keeps a goodbye one second, out of use", () => {
    const c = exact();
    c.add("eth0", PTR("a"), 0);
    assert.equal(c.add("eth0", PTR("a", 0), 5_000), "goodbye");
    assert.equal(c.find("_flatgrid._tcp.local", "PTR").length, 0);
    assert.equal(c.tick(5_999).expired.length, 0);
    const { expired } = c.tick(6_000);
    assert.equal(expired.length, 1);
    assert.equal(expired[0]?.goodbye, true);
    assert.equal(c.add("eth0", PTR("b", 0), 7_000), "unknown-goodbye");
    assert.equal(c.size, 0);
  });

  it("brings a record back when it is announced again within the grace second", () => {
    const c = exact();
    c.add("eth0", PTR("a"), 0);
    c.add("eth0", PTR("a", 0), 5_000);
    assert.equal(c.add("eth0", PTR("a"), 5_500), "refreshed");
    assert.equal(c.find("_flatgrid._tcp.local", "PTR").length, 1);
    assert.equal(c.tick(6_000).expired.length, 0);
  });

  it("flushes older records of a name and type on a cache-flush record (RFC 6762 10.2)", () => {
    const c = exact();
    c.add("eth0", A("10.0.0.1"), 0);
    c.add("eth1", A("10.1.0.1"), 0);
    // A second address arriving in the same second is not flushed.
    c.flushOthers("eth0", [A("10.0.0.2")], 500);
    c.add("eth0", A("10.0.0.2"), 500);
    assert.equal(c.find("node1.local", "A", "eth0").length, 2);
    // Later, a packet with only 10.0.0.3 supersedes both on eth0, not eth1's record.
    assert.equal(c.flushOthers("eth0", [A("10.0.0.3")], 3_000), 2);
    c.add("eth0", A("10.0.0.3"), 3_000);
    assert.deepEqual(
      c
        .find("node1.local", "A")
        .map((e) => `${e.iface}:${e.record.data}`)
        .sort(),
      ["eth0:10.0.0.3", "eth1:10.1.0.1"],
    );
    assert.equal(c.tick(4_000).expired.length, 2);
    // Shared records (no flush bit) flush nothing.
    c.add("eth0", PTR("a"), 5_000);
    assert.equal(c.flushOthers("eth0", [PTR("b")], 9_000), 0);
  });

  it("lists known answers with more than half their TTL left, with the TTL left", () => {
    const c = exact();
    c.add("eth0", PTR("a", 100), 0);
    c.add("eth0", PTR("b", 100), 40_000);
    c.add("eth1", PTR("c", 100), 40_000);
    const known = c.knownAnswers("eth0", "_flatgrid._tcp.local", "PTR", 55_000);
    assert.deepEqual(
      known.map((r) => [r.type === "PTR" ? r.data : "", r.ttl]),
      [["b._flatgrid._tcp.local", 85]],
    );
  });

  it("is bounded: the record closest to expiry goes first", () => {
    const c = new RecordCache({ maxEntries: 3, random: () => 0 });
    c.add("eth0", PTR("a", 50), 0);
    c.add("eth0", PTR("b", 10), 0);
    c.add("eth0", PTR("c", 100), 0);
    c.add("eth0", PTR("d", 100), 0);
    assert.equal(c.size, 3);
    assert.deepEqual(
      c
        .find("_flatgrid._tcp.local", "PTR")
        .map((e) => (e.record.type === "PTR" ? e.record.data.split(".")[0] : ""))
        .sort(),
      ["a", "c", "d"],
    );
  });

  it("forgets an interface", () => {
    const c = exact();
    c.add("eth0", A("10.0.0.1"), 0);
    c.add("eth1", A("10.1.0.1"), 0);
    assert.equal(c.dropInterface("eth0").length, 1);
    assert.deepEqual(
      c.find("node1.local", "A").map((e) => e.iface),
      ["eth1"],
    );
  });
});
