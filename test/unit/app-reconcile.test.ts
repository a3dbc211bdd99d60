// The controller's placement loop as a pure function: what it writes for a new application,
// that running it again on its own output writes nothing, and what happens to the instances
// of a node that is gone (held for the grace period, then placed again) or of an application
// that is destroyed. The cluster test runs the same loop in a real controller on real etcd.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type NodeCapacity,
  type PlacementRecord,
  type ReconcileInput,
  type ReconcilePlan,
  reconcileApps,
  type ScheduleRecord,
} from "../../src/controller/index.js";
import { shopRecord } from "./shop-record.js";

const shop = shopRecord();

const node = (id: string, cpus = 2, memoryMiB = 4096): NodeCapacity => ({
  id,
  cpus,
  memoryMiB,
  diskMiB: 100_000,
  kvm: true,
  alive: true,
});

/** etcd as the loop sees it: the plan applied to the records. */
function apply(
  state: { placements: PlacementRecord[]; schedules: ScheduleRecord[] },
  plan: ReconcilePlan,
) {
  const key = (p: { app: string; instance: string }) => `${p.app}/${p.instance}`;
  const placements = new Map(state.placements.map((p) => [key(p), p]));
  for (const r of plan.remove) placements.delete(key(r));
  for (const p of plan.put) placements.set(key(p), p);
  const schedules = new Map(state.schedules.map((s) => [s.app, s]));
  for (const s of plan.schedules) schedules.set(s.app, s);
  for (const a of plan.removeSchedules) schedules.delete(a);
  return { placements: [...placements.values()], schedules: [...schedules.values()] };
}

const base = (over: Partial<ReconcileInput>): ReconcileInput => ({
  apps: [shop],
  placements: [],
  schedules: [],
  nodes: [node("n1"), node("n2"), node("n3")],
  missingSince: new Map(),
  now: 1_000_000,
  graceMs: 10_000,
  term: 7,
  ...over,
});

describe("the controller's placement loop", () => {
  it("places every instance of a new application, spreading web over 3 nodes, fenced by term", () => {
    const plan = reconcileApps(base({}));
    assert.equal(plan.put.length, 5);
    assert.deepEqual(plan.remove, []);
    assert.ok(plan.put.every((p) => p.term === 7 && p.reasons.length > 0));
    const webs = plan.put.filter((p) => p.instance.startsWith("web."));
    assert.equal(new Set(webs.map((p) => p.node)).size, 3);
    // One schedule record saying nothing is left unplaced.
    assert.deepEqual(
      plan.schedules.map((s) => [s.app, s.unplaced.length]),
      [["shop", 0]],
    );
  });

  it("run again on its own output, writes nothing (level-based, idempotent)", () => {
    const first = reconcileApps(base({}));
    const state = apply({ placements: [], schedules: [] }, first);
    const again = reconcileApps(base({ ...state, now: 2_000_000, term: 8 }));
    assert.deepEqual(
      [again.put, again.remove, again.schedules, again.removeSchedules],
      [[], [], [], []],
    );
  });

  it("holds a gone node's instances for the grace period, then places them elsewhere", () => {
    const state = apply({ placements: [], schedules: [] }, reconcileApps(base({})));
    const db = state.placements.find((p) => p.instance === "db.0");
    assert.ok(db);
    const alive = ["n1", "n2", "n3"].filter((n) => n !== db.node).map((n) => node(n));
    const t0 = 5_000_000;
    const held = reconcileApps(base({ ...state, nodes: alive, now: t0 }));
    assert.deepEqual(held.put, [], "nothing moves within the grace period");
    assert.deepEqual(held.remove, []);
    assert.equal(held.missingSince.get(db.node), t0);
    const later = reconcileApps(
      base({ ...state, nodes: alive, now: t0 + 10_001, missingSince: held.missingSince }),
    );
    const moved = later.put.map((p) => `${p.instance}@${p.node}`).sort();
    const lost = state.placements.filter((p) => p.node === db.node).map((p) => p.instance);
    assert.deepEqual(later.put.map((p) => p.instance).sort(), lost.sort(), `moved: ${moved}`);
    assert.ok(later.put.every((p) => p.node !== db.node));
    assert.ok(
      later.notes.some((n) => /gone for 10 s \(past the 10 s grace\): placing it again/.test(n)),
    );
  });

  it("an instance that fits nowhere gets no node, a reason, and loses its stale placement", () => {
    const state = apply({ placements: [], schedules: [] }, reconcileApps(base({})));
    const db = state.placements.find((p) => p.instance === "db.0");
    assert.ok(db);
    // The nodes left have too little memory for db (1 GiB).
    const small = ["n1", "n2", "n3"].filter((n) => n !== db.node).map((n) => node(n, 2, 900));
    const plan = reconcileApps(
      base({ ...state, nodes: small, now: 10, missingSince: new Map([[db.node, -100_000]]) }),
    );
    assert.ok(plan.remove.some((r) => r.instance === "db.0"));
    const s = plan.schedules.find((x) => x.app === "shop");
    assert.ok(s);
    assert.equal(s.unplaced[0]?.instance, "db.0");
    assert.match(s.unplaced[0]?.reasons.join("; ") ?? "", /not enough memory \(needs 1024 MiB\)/);
  });

  it("a destroyed application loses its placements and its schedule record", () => {
    const state = apply({ placements: [], schedules: [] }, reconcileApps(base({})));
    const plan = reconcileApps(base({ ...state, apps: [] }));
    assert.equal(plan.remove.length, 5);
    assert.deepEqual(plan.removeSchedules, ["shop"]);
    assert.ok(plan.notes.every((n) => /the application is gone/.test(n)));
  });

  it("is deterministic: the same inputs in another order give the same placements", () => {
    const a = reconcileApps(base({}));
    const b = reconcileApps(base({ nodes: [node("n3"), node("n1"), node("n2")] }));
    const key = (p: ReconcilePlan) =>
      p.put
        .map((x) => `${x.instance}@${x.node}`)
        .sort()
        .join();
    assert.equal(key(a), key(b));
  });
});
