import assert from "node:assert/strict";
import { describe, it } from "node:test";
import dnsPacket, { type Answer } from "dns-packet";
import fc from "fast-check";
import { type Advert, AdvertError, decodeTxt, encodeTxt } from "../../src/discovery/advert.js";
import {
  conflictName,
  instanceName,
  nameProblem,
  nodeIdOfInstance,
  SERVICE_TYPE,
  sanitizeHostname,
} from "../../src/discovery/names.js";
import { queryPackets, responsePackets } from "../../src/discovery/packets.js";
import { decodePacket, PacketError } from "../../src/discovery/parse.js";
import {
  type AnyRecord,
  compareProbeSets,
  hostRecords,
  ipv6Bytes,
  type MdnsRecord,
  recordKey,
  serviceRecords,
} from "../../src/discovery/records.js";

const advert: Advert = {
  nodeId: "3f2b8c1e-0d4a-4b7e-9c55-1a2b3c4d5e6f",
  gridId: "",
  state: "booting",
  apiPort: 7443,
  caFingerprint: "",
};

const strings = (...s: (string | Buffer)[]) =>
  s.map((x) => (Buffer.isBuffer(x) ? x : Buffer.from(x)));

function wire(answers: Answer[], type: "response" | "query" = "response"): Buffer {
  return dnsPacket.encode({ type, flags: type === "response" ? 0x400 : 0, answers });
}

describe("discovery advert and TXT", () => {
  it("round-trips an advert through TXT", () => {
    const full = { ...advert, gridId: "a1b2c3", state: "ready", caFingerprint: "ab".repeat(32) };
    const txt = encodeTxt(full);
    assert.deepEqual(
      txt.map((b) => b.toString()),
      [
        "v=1",
        `id=${full.nodeId}`,
        "grid=a1b2c3",
        "state=ready",
        "api=7443",
        `ca=${"ab".repeat(32)}`,
      ],
    );
    assert.deepEqual(decodeTxt(txt), full);
  });

  it("refuses to publish a bad advert", () => {
    assert.throws(() => encodeTxt({ ...advert, apiPort: 0 }), AdvertError);
    assert.throws(() => encodeTxt({ ...advert, nodeId: "Not An Id" }), AdvertError);
    assert.throws(() => encodeTxt({ ...advert, caFingerprint: "abc" }), AdvertError);
    assert.throws(() => encodeTxt({ ...advert, state: "READY!" }), AdvertError);
  });

  it("rejects absurd or missing TXT values", () => {
    const base = ["v=1", "id=node-1", "grid=", "state=ready", "api=7443", "ca="];
    const withValue = (key: string, value: string | Buffer) =>
      base.map((s) =>
        s.startsWith(`${key}=`)
          ? Buffer.isBuffer(value)
            ? Buffer.concat([Buffer.from(`${key}=`), value])
            : `${key}=${value}`
          : s,
      );
    assert.equal(decodeTxt(strings(...base)).apiPort, 7443);
    for (const [key, value] of [
      ["api", "0"],
      ["api", "65536"],
      ["api", "99999"],
      ["api", "-1"],
      ["api", "07443"],
      ["api", "7443.0"],
      ["id", "has space"],
      ["id", "x".repeat(64)],
      ["state", "x".repeat(33)],
      ["state", "Ready"],
      ["ca", "12"],
      ["ca", "g".repeat(64)],
      ["v", "2"],
      ["state", Buffer.from([0xff, 0xfe])],
    ] as const) {
      assert.throws(
        () => decodeTxt(strings(...withValue(key, value))),
        AdvertError,
        `${key}=${String(value)}`,
      );
    }
    for (const missing of ["v", "id", "api", "state", "grid", "ca"]) {
      assert.throws(
        () => decodeTxt(strings(...base.filter((s) => !s.startsWith(`${missing}=`)))),
        AdvertError,
        missing,
      );
    }
    assert.throws(() => decodeTxt(strings(...base, Buffer.from([0x01, 0x3d, 0x31]))), AdvertError);
    assert.throws(() => decodeTxt(strings(...base, "=x")), AdvertError);
  });

  it("takes the first of repeated keys, any key case, and ignores unknown keys", () => {
    const a = decodeTxt(
      strings(
        "V=1",
        "ID=node-1",
        "grid=",
        "state=ready",
        "API=80",
        "api=81",
        "ca=",
        "future=yes",
        "flag",
      ),
    );
    assert.equal(a.apiPort, 80);
    assert.equal(a.nodeId, "node-1");
  });
});

describe("discovery names", () => {
  it("cleans up system host names", () => {
    assert.equal(sanitizeHostname("Server-01.example.com"), "server-01");
    assert.equal(sanitizeHostname("my_box"), "my-box");
    assert.equal(sanitizeHostname("--"), "flatgrid");
    assert.equal(sanitizeHostname("x".repeat(100)).length, 59);
  });

  it("numbers conflicting names base, base-2, base-3", () => {
    assert.deepEqual(
      [1, 2, 3].map((n) => conflictName("node", n)),
      ["node", "node-2", "node-3"],
    );
  });

  it("checks names from the network", () => {
    assert.equal(nameProblem("node-1.local"), undefined);
    assert.match(nameProblem(`${"a".repeat(64)}.local`) ?? "", /label too long/);
    assert.match(nameProblem(`${"abcdefg.".repeat(40)}local`) ?? "", /too long/);
    assert.match(nameProblem("bad\uFFFD.local") ?? "", /UTF-8/);
    assert.match(nameProblem("a\u0001.local") ?? "", /control/);
    assert.match(nameProblem("a..local") ?? "", /empty label/);
    assert.equal(nodeIdOfInstance(instanceName("abc-1")), "abc-1");
    assert.equal(nodeIdOfInstance(`ABC-1.${SERVICE_TYPE.toUpperCase()}`), "abc-1");
    assert.equal(nodeIdOfInstance(`a.b.${SERVICE_TYPE}`), undefined);
    assert.equal(nodeIdOfInstance("x._other._tcp.local"), undefined);
  });
});

describe("discovery records", () => {
  it("builds PTR, SRV, TXT and per-interface A/AAAA records", () => {
    const s = serviceRecords(advert, "node1", 4500);
    assert.deepEqual(
      { name: s.ptr.name, data: s.ptr.data, flush: s.ptr.flush, ttl: s.ptr.ttl },
      {
        name: "_flatgrid._tcp.local",
        data: `${advert.nodeId}._flatgrid._tcp.local`,
        flush: false,
        ttl: 4500,
      },
    );
    assert.deepEqual(s.srv.data, { priority: 0, weight: 0, port: 7443, target: "node1.local" });
    assert.equal(s.srv.flush, true);
    assert.equal(decodeTxt(s.txt.data).nodeId, advert.nodeId);
    const hosts = hostRecords("node1", { ipv4: ["10.0.0.5"], ipv6: ["fd00::5"] }, 120);
    assert.deepEqual(
      hosts.map((r) => [r.name, r.type, r.data, r.ttl, r.flush]),
      [
        ["node1.local", "A", "10.0.0.5", 120, true],
        ["node1.local", "AAAA", "fd00::5", 120, true],
      ],
    );
  });

  it("survives encoding and decoding with dns-packet", () => {
    const s = serviceRecords(advert, "node1", 4500);
    const hosts = hostRecords("node1", { ipv4: ["10.0.0.5"], ipv6: ["fd00::5"] }, 120);
    const [packet] = responsePackets([s.ptr], [s.srv, s.txt, ...hosts]);
    const decoded = decodePacket(dnsPacket.encode(packet!));
    assert.equal(decoded.kind, "response");
    assert.equal(decoded.standard, true);
    const key = (r: AnyRecord) => `${recordKey(r)} ttl=${r.ttl} flush=${r.flush}`;
    assert.deepEqual(decoded.answers.map(key), [s.ptr].map(key));
    assert.deepEqual(decoded.additionals.map(key), [s.srv, s.txt, ...hosts].map(key));
  });

  it("compares IPv6 addresses by value", () => {
    assert.equal(ipv6Bytes("fd00::1").toString("hex"), `fd00${"0".repeat(26)}01`);
    assert.equal(ipv6Bytes("::ffff:10.0.0.1").toString("hex"), `${"0".repeat(20)}ffff0a000001`);
    assert.equal(
      ipv6Bytes("fe80::1%eth0").toString("hex"),
      ipv6Bytes("FE80:0:0::1").toString("hex"),
    );
    const a = (data: string): MdnsRecord => ({
      name: "h.local",
      type: "AAAA",
      ttl: 1,
      flush: true,
      data,
    });
    assert.equal(recordKey(a("fd00::1")), recordKey(a("fd00:0:0:0:0:0:0:1")));
  });

  it("breaks probe ties per RFC 6762 8.2", () => {
    const A = (data: string): MdnsRecord => ({
      name: "h.local",
      type: "A",
      ttl: 120,
      flush: true,
      data,
    });
    const AAAA = (data: string): MdnsRecord => ({
      name: "h.local",
      type: "AAAA",
      ttl: 120,
      flush: true,
      data,
    });
    assert.ok(compareProbeSets([A("10.0.0.9")], [A("10.0.0.10")]) < 0, "9 < 10 as bytes");
    assert.ok(compareProbeSets([A("10.0.0.10")], [A("10.0.0.9")]) > 0);
    assert.equal(compareProbeSets([A("10.0.0.1")], [A("10.0.0.1")]), 0);
    // The type is compared before the data; order within a set does not matter.
    assert.ok(compareProbeSets([AAAA("::1")], [A("255.255.255.255")]) > 0);
    assert.equal(
      compareProbeSets([A("10.0.0.1"), AAAA("fd00::1")], [AAAA("fd00::1"), A("10.0.0.1")]),
      0,
    );
    // A set that runs out first loses.
    assert.ok(compareProbeSets([A("10.0.0.1")], [A("10.0.0.1"), AAAA("fd00::1")]) < 0);
  });

  it("splits large queries with TC and keeps answers whole", () => {
    const known: MdnsRecord[] = Array.from({ length: 60 }, (_, i) => ({
      name: SERVICE_TYPE,
      type: "PTR",
      ttl: 4500,
      flush: false,
      data: instanceName(`node-${i}-aaaaaaaaaaaaaaaaaaaaaaaa`),
    }));
    const packets = queryPackets([{ name: SERVICE_TYPE, type: "PTR" }], known);
    assert.ok(packets.length > 1);
    packets.forEach((p, i) => {
      assert.ok(dnsPacket.encode(p).length <= 1400);
      assert.equal(decodePacket(dnsPacket.encode(p)).truncated, i < packets.length - 1);
    });
    assert.equal(
      packets.reduce((n, p) => n + (p.answers?.length ?? 0), 0),
      60,
    );
    assert.equal(packets[0]?.questions?.length, 1);
  });
});

describe("discovery packet parsing", () => {
  const instance = instanceName("node-1");
  const ptr: Answer = { name: SERVICE_TYPE, type: "PTR", ttl: 4500, data: instance };
  const srv = (port: number, target = "h.local"): Answer => ({
    name: instance,
    type: "SRV",
    ttl: 4500,
    data: { port, target },
  });
  const txt = (...s: string[]): Answer => ({
    name: instance,
    type: "TXT",
    ttl: 4500,
    data: strings(...s),
  });
  const good = ["v=1", "id=node-1", "grid=", "state=ready", "api=7443", "ca="];

  it("accepts a well-formed advert", () => {
    const p = decodePacket(wire([ptr, srv(7443), txt(...good)]));
    assert.equal(p.answers.length, 3);
  });

  it("refuses bad flatgrid records and bad names", () => {
    const bad: [string, Buffer][] = [
      ["random bytes", Buffer.from("not a dns packet at all, no")],
      ["short", Buffer.alloc(5)],
      ["SRV port 0", wire([ptr, srv(0)])],
      ["SRV target not .local", wire([srv(7443, "h.example.com")])],
      ["TXT api", wire([txt("v=1", "id=node-1", "grid=", "state=ready", "api=99999", "ca=")])],
      [
        "TXT id of another node",
        wire([txt("v=1", "id=node-2", "grid=", "state=ready", "api=1", "ca=")]),
      ],
      ["PTR to a bad instance", wire([{ ...ptr, data: `Bad Id!.${SERVICE_TYPE}` }])],
      [
        "instance with two labels",
        wire([{ ...ptr, name: `a.b.${SERVICE_TYPE}`, type: "TXT", data: strings(...good) }]),
      ],
      ["trailing bytes", Buffer.concat([wire([ptr]), Buffer.from([1, 2, 3])])],
      [
        "label too long",
        wire([{ name: `${"x".repeat(70)}.local`, type: "A", ttl: 1, data: "10.0.0.1" }]),
      ],
    ];
    for (const [what, buf] of bad) assert.throws(() => decodePacket(buf), PacketError, what);
  });

  it("leaves other services alone", () => {
    const other: Answer = {
      name: "printer._ipp._tcp.local",
      type: "TXT",
      ttl: 1,
      data: strings("api=99999"),
    };
    assert.equal(decodePacket(wire([other])).answers.length, 1);
  });

  it("marks non-zero opcodes as not standard, reads the QU bit and clamps TTLs", () => {
    const p = decodePacket(
      dnsPacket.encode({ type: "response", flags: 0x2800, answers: [{ ...ptr, ttl: 2 ** 31 }] }),
    );
    assert.equal(p.standard, false);
    assert.equal(p.answers[0]?.ttl, 86_400);
    const q = Buffer.from(
      dnsPacket.encode({ type: "query", questions: [{ name: SERVICE_TYPE, type: "PTR" }] }),
    );
    q.writeUInt16BE(0x8001, q.length - 2); // class IN with the QU bit
    assert.deepEqual(decodePacket(q).questions, [{ name: SERVICE_TYPE, type: "PTR", qu: true }]);
  });

  it("never throws anything but PacketError on random input", () => {
    const seed = wire([ptr, srv(7443), txt(...good)]);
    let refused = 0;
    for (let i = 0; i < 3000; i++) {
      const buf = Buffer.from(seed);
      for (let k = 0; k < 1 + (i % 5); k++) {
        const at = (i * 7919 + k * 104729) % buf.length;
        buf[at] = (buf[at] ?? 0) ^ (1 << ((i + k) % 8));
      }
      try {
        decodePacket(buf.subarray(0, buf.length - (i % 3)));
      } catch (err) {
        assert.ok(err instanceof PacketError, String(err));
        refused++;
      }
    }
    assert.ok(refused > 0);
  });

  it("never throws anything but PacketError on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 700 }), (bytes) => {
        try {
          decodePacket(Buffer.from(bytes));
        } catch (err) {
          if (!(err instanceof PacketError)) throw err;
        }
      }),
      { numRuns: 3000 },
    );
  });
});
