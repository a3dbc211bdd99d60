import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isSuppressed, selectAnswers } from "../../src/discovery/answers.js";
import { browseInterval } from "../../src/discovery/browser.js";
import type { Question } from "../../src/discovery/parse.js";
import { RateLimiter } from "../../src/discovery/rate-limit.js";
import {
  hostRecords,
  type MdnsRecord,
  serviceRecords,
  withTtl,
} from "../../src/discovery/records.js";

const advert = { nodeId: "node-1", gridId: "", state: "ready", apiPort: 7443, caFingerprint: "" };
const service = serviceRecords(advert, "host1", 4500);
const hosts = hostRecords("host1", { ipv4: ["10.0.0.1"], ipv6: ["fd00::1"] }, 120);
const ours: MdnsRecord[] = [service.ptr, service.srv, service.txt, service.enumeration, ...hosts];
const q = (name: string, type: string): Question => ({ name, type, qu: false });
const short = (r: MdnsRecord) =>
  r.type === "TXT" ? `${r.name} TXT` : `${r.name} ${r.type} ${JSON.stringify(r.data)}`;

describe("discovery answers", () => {
  it("answers a PTR question with the PTR and the SRV, TXT, A, AAAA as additionals", () => {
    const s = selectAnswers([q("_flatgrid._tcp.local", "PTR")], ours, []);
    assert.deepEqual(s.answers.map(short), [short(service.ptr)]);
    assert.deepEqual(s.additionals.map(short), [service.srv, service.txt, ...hosts].map(short));
  });

  it("answers SRV with addresses, A with AAAA, ANY with all of a name, case-insensitively", () => {
    const srv = selectAnswers([q(`NODE-1._flatgrid._tcp.local`, "SRV")], ours, []);
    assert.deepEqual(srv.answers, [service.srv]);
    assert.deepEqual(srv.additionals, hosts);
    const a = selectAnswers([q("HOST1.local", "A")], ours, []);
    assert.deepEqual(a.answers, [hosts[0]]);
    assert.deepEqual(a.additionals, [hosts[1]]);
    const any = selectAnswers([q("host1.local", "ANY")], ours, []);
    assert.deepEqual(any.answers, hosts);
    const services = selectAnswers([q("_services._dns-sd._udp.local", "PTR")], ours, []);
    assert.deepEqual(services.answers, [service.enumeration]);
    assert.deepEqual(selectAnswers([q("other.local", "A")], ours, []).answers, []);
  });

  it("leaves out known answers with at least half our TTL (RFC 6762 7.1)", () => {
    const fresh = withTtl(service.ptr, 2250);
    const stale = withTtl(service.ptr, 2249);
    assert.equal(isSuppressed(service.ptr, [fresh]), true);
    assert.equal(isSuppressed(service.ptr, [stale]), false);
    const s = selectAnswers([q("_flatgrid._tcp.local", "PTR")], ours, [fresh]);
    assert.deepEqual(s.answers, []);
    assert.equal(s.suppressed, 1);
    const t = selectAnswers([q("_flatgrid._tcp.local", "PTR")], ours, [stale]);
    assert.deepEqual(t.answers, [service.ptr]);
  });

  it("does not take another node's record as a known answer for ours", () => {
    const other = serviceRecords({ ...advert, nodeId: "node-2" }, "host2", 4500).ptr;
    const s = selectAnswers([q("_flatgrid._tcp.local", "PTR")], ours, [other]);
    assert.deepEqual(s.answers, [service.ptr]);
  });

  it("leaves out known additionals too", () => {
    const s = selectAnswers([q("_flatgrid._tcp.local", "PTR")], ours, [service.txt]);
    assert.ok(!s.additionals.includes(service.txt));
    assert.equal(s.suppressed, 1);
  });
});

describe("discovery rate limit", () => {
  const r = service.txt;

  it("multicasts a record at most once a second per interface", () => {
    const l = new RateLimiter();
    assert.equal(l.allows("eth0", r, 10_000), true);
    l.sent("eth0", [r], 10_000);
    assert.equal(l.allows("eth0", r, 10_500), false);
    assert.equal(l.allows("eth0", r, 10_999), false);
    assert.equal(l.allows("eth0", r, 11_000), true);
    assert.equal(l.allows("eth1", r, 10_500), true, "interfaces are independent");
    assert.equal(l.allows("eth0", service.srv, 10_500), true, "records are independent");
  });

  it("lets probe defence through every 250 ms", () => {
    const l = new RateLimiter();
    l.sent("eth0", [hosts[0]!], 0);
    assert.equal(l.allows("eth0", hosts[0]!, 200, true), false);
    assert.equal(l.allows("eth0", hosts[0]!, 250, true), true);
    assert.equal(l.allows("eth0", hosts[0]!, 250, false), false);
  });

  it("splits an answer into what may go and what was just sent", () => {
    const l = new RateLimiter();
    l.sent("eth0", [service.ptr], 0);
    const { allowed, limited } = l.split("eth0", [service.ptr, service.srv], 400);
    assert.deepEqual(allowed, [service.srv]);
    assert.deepEqual(limited, [service.ptr]);
    l.dropInterface("eth0");
    assert.equal(l.allows("eth0", service.ptr, 400), true);
  });
});

describe("discovery browse backoff", () => {
  it("queries after 1 s, 2 s, 4 s... capped at an hour", () => {
    assert.deepEqual(
      [0, 1, 2, 3, 10].map((n) => browseInterval(n)),
      [1000, 2000, 4000, 8000, 1_024_000],
    );
    assert.equal(browseInterval(12), 3_600_000);
    assert.equal(browseInterval(1000), 3_600_000);
  });
});
