import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULT_CONFIG, type NodeConfig, networkChanges } from "../../src/os/index.js";

const node = (o: Partial<NodeConfig>): NodeConfig => ({ ...DEFAULT_CONFIG, ...o });
const staticAt = (ip: string) => node({ net: "static", ip, gateway: "10.0.0.1" });

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
});
