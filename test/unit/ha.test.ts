import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { haStatus, type NodeCapacity, type Placed } from "../../src/controller/index.js";

const node = (id: string, memoryMiB: number): NodeCapacity => ({
  id,
  cpus: 8,
  memoryMiB,
  diskMiB: 100_000,
  kvm: true,
  alive: true,
});
const at = (node: string, key: string, memoryMiB = 1024): Placed => ({
  key,
  app: key.split("/")[0] ?? "",
  component: key.split("/")[1]?.split(".")[0] ?? "",
  cpus: 1,
  memoryMiB,
  diskMiB: 10,
  node,
});

describe("grid HA status", () => {
  it("ok when every node's instances fit on the others", () => {
    const s = haStatus(
      [node("a", 4096), node("b", 4096), node("c", 4096)],
      [at("a", "shop/web.0"), at("b", "shop/web.1"), at("c", "shop/db.0")],
      ["a", "b", "c"],
    );
    assert.deepEqual(s, { ok: true, problems: [] });
  });

  it("not ok, naming the node and the instances, when one loss cannot be absorbed", () => {
    const s = haStatus(
      [node("a", 4096), node("b", 1024)],
      [at("a", "shop/db.0", 3072), at("b", "shop/web.0")],
      ["b"],
    );
    assert.equal(s.ok, false);
    assert.equal(s.problems.length, 2);
    assert.match(
      s.problems[0] ?? "",
      /losing node a would leave shop\/db.0 without a place \(1 node: not enough memory/,
    );
  });

  it("one node is never HA", () => {
    assert.equal(haStatus([node("a", 4096)], [at("a", "shop/web.0")], ["a"]).ok, false);
    assert.equal(haStatus([node("a", 4096)], [], ["a"]).ok, true);
  });

  it("not ok when losing a node would take etcd's quorum, wherever the instances are: every node would fence itself", () => {
    const roomy = [node("a", 8192), node("b", 8192), node("c", 8192)];
    const apps = [at("b", "shop/web.0"), at("c", "shop/web.1")];
    // Two nodes, one voter (a grid under 3 nodes has one): its loss stops everything.
    const two = haStatus(roomy.slice(0, 2), apps.slice(0, 1), ["a"]);
    assert.equal(two.ok, false);
    assert.deepEqual(two.problems, [
      "losing node a would lose the grid's store (its only etcd voter): every node would stop its VMs; 3 nodes or more give 3 voters",
    ]);
    // Three voters, one of them down: the next loss of a voter leaves 1 of 3.
    const down = haStatus(
      [...roomy.slice(0, 2), { ...node("c", 8192), alive: false }],
      apps.slice(0, 1),
      ["a", "b", "c"],
    );
    assert.equal(down.ok, false);
    assert.match(
      down.problems[0] ?? "",
      /losing node a would leave 1 of 3 etcd voters up, short of a quorum/,
    );
    assert.match(down.problems[1] ?? "", /losing node b would leave 1 of 3 etcd voters up/);
    // Three voters up: any one can go.
    assert.equal(haStatus(roomy, apps, ["a", "b", "c"]).ok, true);
    // No applications: nothing to lose.
    assert.equal(haStatus(roomy.slice(0, 2), [], ["a"]).ok, true);
  });
});
