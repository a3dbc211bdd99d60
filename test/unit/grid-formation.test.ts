import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { decide, type FormationPeer, targetVoters } from "../../src/grid/index.js";

const peer = (nodeId: string, state = "forming", gridId = "", gridName = "g"): FormationPeer => ({
  nodeId,
  gridName,
  gridId,
  state,
  apiPort: 7443,
  address: "10.0.0.1",
});

describe("formation rule", () => {
  it("waits during the discovery window", () => {
    assert.equal(decide({ nodeId: "a", gridName: "g" }, [], 100, 2000).action, "wait");
  });

  it("the lowest forming node creates; the others wait for it", () => {
    const peers = [peer("b"), peer("c")];
    assert.deepEqual(decide({ nodeId: "a", gridName: "g" }, peers, 3000, 2000), {
      action: "create",
    });
    const b = decide({ nodeId: "b", gridName: "g" }, [peer("a"), peer("c")], 3000, 2000);
    assert.equal(b.action, "wait");
    assert.match((b as { reason: string }).reason, /node a will create/);
  });

  it("peers of another grid name do not count", () => {
    const d = decide(
      { nodeId: "b", gridName: "g" },
      [peer("a", "forming", "", "other")],
      3000,
      2000,
    );
    assert.deepEqual(d, { action: "create" });
  });

  it("a member of the grid is joined, even before the window ends", () => {
    const d = decide({ nodeId: "a", gridName: "g" }, [peer("z", "ready", "grid-1")], 10, 2000);
    assert.equal(d.action, "join");
  });

  it("a creator in progress is waited for, whatever its id", () => {
    const d = decide({ nodeId: "a", gridName: "g" }, [peer("z", "creating")], 3000, 2000);
    assert.equal(d.action, "wait");
  });

  it("of two grids with one name, every node joins the same (lowest id)", () => {
    const peers = [peer("x", "ready", "grid-2"), peer("y", "ready", "grid-1")];
    const d = decide({ nodeId: "a", gridName: "g" }, peers, 3000, 2000);
    assert.equal(d.action, "join");
    assert.equal((d as { gridId: string }).gridId, "grid-1");
  });

  it("among nodes that all hear each other, exactly one creates (property)", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.uuid(), { minLength: 1, maxLength: 12 }), (ids) => {
        const creators = ids.filter((id) => {
          const others = ids.filter((o) => o !== id).map((o) => peer(o));
          return decide({ nodeId: id, gridName: "g" }, others, 5000, 2000).action === "create";
        });
        assert.equal(creators.length, 1);
      }),
      { seed: 42, numRuns: 200 },
    );
  });

  it("voters: 1, then 3 from 3 nodes, 5 from 5", () => {
    assert.deepEqual([1, 2, 3, 4, 5, 9].map(targetVoters), [1, 1, 3, 3, 5, 5]);
  });
});
