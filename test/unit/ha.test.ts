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
    );
    assert.deepEqual(s, { ok: true, problems: [] });
  });

  it("not ok, naming the node and the instances, when one loss cannot be absorbed", () => {
    const s = haStatus(
      [node("a", 4096), node("b", 1024)],
      [at("a", "shop/db.0", 3072), at("b", "shop/web.0")],
    );
    assert.equal(s.ok, false);
    assert.equal(s.problems.length, 1);
    assert.match(
      s.problems[0] ?? "",
      /losing node a would leave shop\/db.0 without a place \(1 node: not enough memory/,
    );
  });

  it("one node is never HA", () => {
    assert.equal(haStatus([node("a", 4096)], [at("a", "shop/web.0")]).ok, false);
    assert.equal(haStatus([node("a", 4096)], []).ok, true);
  });
});
