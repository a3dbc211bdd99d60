import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  addressChangeProblems,
  DEFAULT_CONFIG,
  type NodeConfig,
  networkChanges,
} from "../../src/os/index.js";

const node = (o: Partial<NodeConfig>): NodeConfig => ({ ...DEFAULT_CONFIG, ...o });
const staticAt = (ip: string) => node({ net: "static", ip, gateway: "10.0.0.1" });
const grid = { name: "lab", address: "10.0.0.5" };

describe("network settings changed on a running node", () => {
  it("names the network settings that differ, and only those", () => {
    assert.deepEqual(networkChanges(staticAt("10.0.0.5/24"), staticAt("10.0.0.5/24")), []);
    assert.deepEqual(networkChanges(staticAt("10.0.0.5/24"), staticAt("10.0.0.6/24")), [
      "flatgrid.ip",
    ]);
    assert.deepEqual(networkChanges(node({}), { ...node({}), dns: ["10.0.0.53"] }), [
      "flatgrid.dns",
    ]);
    assert.deepEqual(networkChanges(node({}), { ...node({}), hostname: "other" }), []);
    assert.deepEqual(networkChanges(node({}), staticAt("10.0.0.5/24")), [
      "flatgrid.net",
      "flatgrid.ip",
      "flatgrid.gateway",
    ]);
  });

  it("a node outside any grid may take any address", () => {
    assert.deepEqual(addressChangeProblems(null, node({}), staticAt("10.0.0.9/24")), []);
  });

  it("a grid member keeps its address: another one, or DHCP in place of it, is its field's problem", () => {
    assert.deepEqual(
      addressChangeProblems(grid, staticAt("10.0.0.5/24"), staticAt("10.0.0.5/16")),
      [],
    );
    const moved = addressChangeProblems(grid, staticAt("10.0.0.5/24"), staticAt("10.0.0.9/24"));
    assert.equal(moved.length, 1);
    assert.equal(moved[0]?.key, "flatgrid.ip");
    assert.match(
      moved[0]?.message ?? "",
      /^must stay 10\.0\.0\.5\/\.\.\.: this node is in grid lab as 10\.0\.0\.5/,
    );
    const dhcp = addressChangeProblems(grid, staticAt("10.0.0.5/24"), node({}));
    assert.equal(dhcp[0]?.key, "flatgrid.net");
    assert.match(dhcp[0]?.message ?? "", /cannot be dhcp now/);
    // On DHCP already: its name servers may change, its lease stays.
    assert.deepEqual(
      addressChangeProblems(grid, node({}), { ...node({}), dns: ["10.0.0.53"] }),
      [],
    );
    // From DHCP to its own address as static: fine.
    assert.deepEqual(addressChangeProblems(grid, node({}), staticAt("10.0.0.5/24")), []);
  });
});
