import type { AppRecord } from "../controller/index.js";
import { instanceAddress, instanceMac } from "./instance-plan.js";
import { bridgeName, tapName, vxlanName } from "./net-names.js";

/**
 * Application networks: one isolated L2 segment per application across the grid. On each
 * node that runs an instance of it, a bridge (fgb<net>) holds the instances' taps
 * (fgt<net>i<k>) and a VXLAN port (fgx<net>, VNI VNI_BASE + net) to the other nodes that
 * run instances of it. The VXLAN port does not learn: its forwarding entries come from the
 * placements in etcd, one per remote instance's MAC (addresses and MACs do not depend on the
 * node, so a moved instance needs one entry changed), plus a flood entry per remote node for
 * ARP. nftables (table bridge flatgrid) drops frames a guest sends as someone else, and lets
 * through exactly the connected terminal pairs: from an output's instance to its input's
 * port, and the replies (matched by port: stateless); ARP; nothing else. Pure:
 * the agent turns these plans into `ip`, `bridge` and `nft` commands.
 */

export const VNI_BASE = 0x10000;
export const VXLAN_PORT = 4789;

export interface AppNetPlan {
  app: string;
  net: number;
  bridge: string;
  vxlan: string;
  vni: number;
  /** Taps of the instances on this node. */
  taps: string[];
  /** The instances on this node: what their frames must come from (no spoofing). */
  local: { tap: string; mac: string; address: string }[];
  /** Underlay addresses of the other nodes that run instances of the application. */
  remoteNodes: string[];
  /** Where each instance on another node is: its MAC behind that node's address. */
  remoteMacs: { mac: string; node: string }[];
  /** The nftables rules of its chain, in order (the last drops the rest). */
  rules: string[];
}

/**
 * The networks this node needs: one per application with an instance here. `where` maps
 * `app/instance` to the underlay address of the node it is placed on.
 */
export function planNetworks(
  self: string,
  apps: readonly AppRecord[],
  where: ReadonlyMap<string, string>,
): AppNetPlan[] {
  const plans: AppNetPlan[] = [];
  for (const app of [...apps].sort((a, b) => (a.net ?? 0) - (b.net ?? 0))) {
    const net = app.net;
    if (net === undefined) continue;
    const instances = app.spec.instances.map((i, index) => ({
      ...i,
      index,
      address: instanceAddress(net, index),
      node: where.get(`${app.name}/${i.id}`) ?? null,
    }));
    if (!instances.some((i) => i.node === self)) continue;
    const remote = instances.filter((i) => i.node !== null && i.node !== self);
    const byId = new Map(instances.map((i) => [i.id, i]));
    const rules = ["ether type arp accept"];
    for (const link of app.spec.links) {
      const from = byId.get(link.from.instance);
      const to = byId.get(link.to.instance);
      if (!from || !to) continue;
      const p = link.protocol;
      rules.push(
        `ip saddr ${from.address} ip daddr ${to.address} ${p} dport ${link.port} accept`,
        `ip saddr ${to.address} ip daddr ${from.address} ${p} sport ${link.port} accept`,
      );
    }
    rules.push("drop");
    plans.push({
      app: app.name,
      net,
      bridge: bridgeName(net),
      vxlan: vxlanName(net),
      vni: VNI_BASE + net,
      taps: instances.filter((i) => i.node === self).map((i) => tapName(net, i.index)),
      local: instances
        .filter((i) => i.node === self)
        .map((i) => ({
          tap: tapName(net, i.index),
          mac: instanceMac(i.address),
          address: i.address,
        })),
      remoteNodes: [...new Set(remote.map((i) => i.node as string))].sort(),
      remoteMacs: remote.map((i) => ({ mac: instanceMac(i.address), node: i.node as string })),
      rules,
    });
  }
  return plans;
}

/** The whole `table bridge flatgrid`, replaced in one `nft -f` transaction. */
export function nftRuleset(plans: readonly AppNetPlan[]): string {
  const lines = [
    "table bridge flatgrid",
    "delete table bridge flatgrid",
    "table bridge flatgrid {",
    "  chain forward {",
    "    type filter hook forward priority 0; policy accept;",
  ];
  // A guest speaks only as itself: its MAC, its address, in IPv4 and in ARP.
  for (const p of plans)
    for (const l of p.local)
      lines.push(
        `    iifname "${l.tap}" ether saddr != ${l.mac} drop`,
        `    iifname "${l.tap}" ether type ip ip saddr != ${l.address} drop`,
        `    iifname "${l.tap}" ether type arp arp saddr ip != ${l.address} drop`,
      );
  // A frame entering from an application's port goes through that application's chain.
  for (const p of plans)
    lines.push(`    iifname { "${p.vxlan}", "fgt${p.net}i*" } jump app${p.net}`);
  lines.push("  }");
  for (const p of plans) {
    lines.push(`  chain app${p.net} {`, `    comment "${p.app}"`);
    for (const r of p.rules) lines.push(`    ${r}`);
    lines.push("  }");
  }
  lines.push("}");
  return `${lines.join("\n")}\n`;
}
