// Application networks as plans: which links, forwarding entries and rules a node needs for
// the instances placed on it and elsewhere. The cluster test applies them to real bridges,
// VXLAN ports and nftables, and sends traffic through them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { natRuleset, nftRuleset, planNetworks } from "../../src/agent/app-network.js";
import { shopRecord } from "./shop-record.js";

const shop = shopRecord(2);
const where = new Map([
  ["shop/lb.0", "10.0.0.1"],
  ["shop/web.0", "10.0.0.2"],
  ["shop/web.1", "10.0.0.1"],
  ["shop/web.2", "10.0.0.3"],
  ["shop/db.0", "10.0.0.2"],
]);

describe("application network plans", () => {
  it("gives a node with instances a bridge, a VXLAN port and a tap each", () => {
    const [p, ...rest] = planNetworks("10.0.0.1", [shop], where);
    assert.equal(rest.length, 0);
    assert.ok(p);
    assert.equal(p.bridge, "fgb2");
    assert.equal(p.vxlan, "fgx2");
    assert.equal(p.vni, 65538);
    assert.deepEqual(p.taps, ["fgt2i0", "fgt2i2"]);
    assert.deepEqual(p.remoteNodes, ["10.0.0.2", "10.0.0.3"]);
    assert.deepEqual(p.remoteMacs, [
      { mac: "02:fb:0a:80:20:03", node: "10.0.0.2" },
      { mac: "02:fb:0a:80:20:05", node: "10.0.0.3" },
      { mac: "02:fb:0a:80:20:06", node: "10.0.0.2" },
    ]);
  });

  it("gives a node without instances of an application nothing of it", () => {
    assert.deepEqual(planNetworks("10.0.0.9", [shop], where), []);
    const { net: _, ...old } = shop;
    assert.deepEqual(planNetworks("10.0.0.1", [old], where), [], "no network number, no network");
  });

  it("lets through the connected pairs and their replies, drops spoofing and the rest", () => {
    const rules = nftRuleset(planNetworks("10.0.0.1", [shop], where), "conntrack");
    assert.match(rules, /^delete table bridge flatgrid$/m);
    assert.match(rules, /iifname "fgt2i0" ether type ip ip saddr != 10\.128\.32\.2 drop/);
    assert.match(rules, /iifname "fgt2i0" ether saddr != 02:fb:0a:80:20:02 drop/);
    assert.match(rules, /iifname \{ "fgx2", "fgt2i\*" \} jump app2/);
    // Replies of the connections let through, and only those: db cannot open one to web.
    assert.match(
      rules,
      /comment "shop"\n {4}ether type arp accept\n {4}ct state established,related accept\n/,
    );
    assert.match(rules, /ip saddr 10\.128\.32\.3 ip daddr 10\.128\.32\.6 tcp dport 6379 accept/);
    assert.doesNotMatch(rules, /sport/);
    assert.match(rules, /ip saddr 10\.128\.32\.2 ip daddr 10\.128\.32\.4 tcp dport 80 accept/);
    assert.doesNotMatch(rules, /daddr 10\.128\.32\.2 tcp dport/, "nothing connects to lb");
    assert.match(rules, /accept\n {4}drop\n {2}\}/, "the chain ends with drop");
  });

  it("without bridge connection tracking, replies pass by the server's port", () => {
    const rules = nftRuleset(planNetworks("10.0.0.1", [shop], where), "port");
    assert.doesNotMatch(rules, /\bct\b/);
    assert.match(rules, /ip saddr 10\.128\.32\.3 ip daddr 10\.128\.32\.6 tcp dport 6379 accept/);
    assert.match(rules, /ip saddr 10\.128\.32\.6 ip daddr 10\.128\.32\.3 tcp sport 6379 accept/);
    assert.match(rules, /accept\n {4}drop\n {2}\}/, "the chain ends with drop");
  });

  it("publishes lb's http on the address of the node that runs lb, and only there", () => {
    const [here] = planNetworks("10.0.0.1", [shop], where);
    assert.deepEqual(here?.published, [
      { instance: "lb.0", port: 80, address: "10.128.32.2", terminalPort: 80, protocol: "tcp" },
    ]);
    assert.equal(here?.gateway, "10.128.32.1/20");
    const nat = natRuleset("10.0.0.1", here ? [here] : []);
    assert.match(nat, /ip daddr 10\.0\.0\.1 tcp dport 80 dnat to 10\.128\.32\.2:80/);
    assert.match(nat, /oifname "fgb2" ip daddr 10\.128\.32\.2 tcp dport 80 masquerade/);
    assert.match(nat, /iifname != "fgb\*" oifname "fgb\*" drop/);
    // The node's .1 never crosses to other nodes, which may have the same one.
    assert.match(
      nftRuleset(here ? [here] : [], "conntrack"),
      /oifname "fgx2" ether type arp arp saddr ip 10\.128\.32\.1 drop/,
    );
    const [there] = planNetworks("10.0.0.2", [shop], where);
    assert.deepEqual(there?.published, []);
    assert.equal(there?.gateway, null);
    assert.doesNotMatch(natRuleset("10.0.0.2", there ? [there] : []), /dnat to/);
  });
});
