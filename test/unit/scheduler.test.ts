import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { type Demand, type NodeCapacity, place } from "../../src/controller/index.js";

const node = (
  id: string,
  cpus = 4,
  memoryMiB = 4096,
  extra: Partial<NodeCapacity> = {},
): NodeCapacity => ({
  id,
  cpus,
  memoryMiB,
  diskMiB: 100_000,
  kvm: true,
  alive: true,
  ...extra,
});
const inst = (app: string, id: string, cpus = 1, memoryMiB = 512): Demand => ({
  key: `${app}/${id}`,
  app,
  component: id.split(".")[0] ?? id,
  cpus,
  memoryMiB,
  diskMiB: 100,
});

describe("scheduler", () => {
  it("spreads the instances of a component over different nodes", () => {
    const d = place({
      nodes: [node("a"), node("b"), node("c")],
      placed: [],
      pending: [inst("shop", "web.0"), inst("shop", "web.1"), inst("shop", "web.2")],
    });
    assert.equal(new Set(d.map((x) => x.node)).size, 3);
    assert.ok(d.every((x) => x.reasons.some((r) => /runs no other web instance/.test(r))));
  });

  it("says why an instance fits nowhere, per kind of refusal", () => {
    const d = place({
      nodes: [
        node("a", 1, 256),
        node("b", 8, 8192, { kvm: false }),
        node("c", 8, 8192, { alive: false }),
      ],
      placed: [],
      pending: [inst("shop", "db.0", 1, 1024)],
    });
    assert.equal(d[0]?.node, null);
    assert.deepEqual(d[0]?.reasons.sort(), [
      "1 node: down",
      "1 node: no KVM",
      "1 node: not enough memory (needs 1024 MiB)",
    ]);
  });

  it("keeps an application within its node limit", () => {
    const d = place({
      nodes: [node("a", 16, 16384), node("b", 16, 16384), node("c", 16, 16384)],
      placed: [],
      pending: ["web.0", "web.1", "web.2", "web.3"].map((i) => inst("shop", i)),
      maxNodes: new Map([["shop", 2]]),
    });
    assert.equal(new Set(d.map((x) => x.node)).size, 2);
  });

  it("counts what is already placed", () => {
    const d = place({
      nodes: [node("a", 2, 2048), node("b", 2, 2048)],
      placed: [{ ...inst("x", "big.0", 2, 2048), node: "a" }],
      pending: [inst("shop", "web.0")],
    });
    assert.equal(d[0]?.node, "b");
  });

  it("never overcommits, and is the same whatever order the nodes come in (property)", () => {
    const nodeArb = fc.record({
      cpus: fc.integer({ min: 1, max: 16 }),
      memoryMiB: fc.integer({ min: 256, max: 16384 }),
      kvm: fc.boolean(),
    });
    const instArb = fc.record({
      comp: fc.constantFrom("web", "db", "lb"),
      cpus: fc.constantFrom(0.5, 1, 2),
      memoryMiB: fc.constantFrom(128, 512, 2048),
    });
    fc.assert(
      fc.property(
        fc.array(nodeArb, { minLength: 1, maxLength: 8 }),
        fc.array(instArb, { maxLength: 30 }),
        fc.integer(),
        (ns, is, seed) => {
          const nodes = ns.map((n, i) => node(`n${i}`, n.cpus, n.memoryMiB, { kvm: n.kvm }));
          const pending = is.map((x, i) => inst("app", `${x.comp}.${i}`, x.cpus, x.memoryMiB));
          const a = place({ nodes, placed: [], pending });
          const shuffled = [...nodes].sort(
            (p, q) =>
              ((p.id.charCodeAt(1) * 31 + seed) % 7) - ((q.id.charCodeAt(1) * 31 + seed) % 7),
          );
          const b = place({ nodes: shuffled, placed: [], pending: [...pending].reverse() });
          const byKey = (d: typeof a) => Object.fromEntries(d.map((x) => [x.key, x.node]));
          assert.deepEqual(byKey(a), byKey(b));
          for (const n of nodes) {
            const here = a
              .filter((x) => x.node === n.id)
              .map((x) => pending.find((p) => p.key === x.key));
            assert.ok(n.kvm || here.length === 0);
            assert.ok(here.reduce((s, p) => s + (p?.cpus ?? 0), 0) <= n.cpus + 1e-9);
            assert.ok(here.reduce((s, p) => s + (p?.memoryMiB ?? 0), 0) <= n.memoryMiB);
          }
        },
      ),
      { seed: 7, numRuns: 200 },
    );
  });
});
