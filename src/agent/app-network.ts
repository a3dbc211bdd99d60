import type { AppRecord } from "../controller/index.js";
import { APP_NET_PREFIX, appGateway, instanceAddress, instanceMac } from "./instance-plan.js";
import { bridgeName, tapName, vxlanName } from "./net-names.js";

/**
 * Application networks: one isolated L2 segment per application across the grid. On each
 * node that runs an instance of it, a bridge (fgb<net>) holds the instances' taps
 * (fgt<net>i<k>) and a VXLAN port (fgx<net>, VNI VNI_BASE + net) to the other nodes that
 * run instances of it. The VXLAN port does not learn: its forwarding entries come from the
 * placements in etcd, one per remote instance's MAC (addresses and MACs do not depend on the
 * node, so a moved instance needs one entry changed), plus a flood entry per remote node for
 * ARP. nftables (table bridge flatgrid) drops frames a guest sends as someone else, and lets
 * through exactly the connected terminal pairs: a connection from an output's instance to
 * its input's port, and that connection's replies; ARP; nothing else. Replies are told by
 * the bridge's connection tracking (nf_conntrack_bridge) where the kernel has it, so that
 * a server cannot open a connection of its own to its client; a kernel without it gets
 * stateless rules that let through packets from the input's port (see Replies). Pure:
 * the agent turns these plans into `ip`, `bridge` and `nft` commands.
 */

/**
 * How the replies of an allowed connection get through: `conntrack` (only packets of a
 * connection the client opened) or `port` (any packet from the server's terminal port to the
 * client: a server could then open connections from that port, so only where the kernel
 * tracks no bridged connections).
 */
export type Replies = "conntrack" | "port";

/** A connection the application's terminals allow: `from` may connect to `to` on `port`. */
export interface AllowedConnection {
  from: string;
  to: string;
  protocol: "tcp" | "udp";
  port: number;
}

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
  /** The connections its terminals allow, from instance address to instance address. */
  allowed: AllowedConnection[];
  /**
   * Terminals of instances here published on this node's address (the descriptor's
   * `expose`): node port -> instance address and terminal port, by DNAT.
   */
  published: {
    instance: string;
    port: number;
    address: string;
    terminalPort: number;
    protocol: "tcp" | "udp";
  }[];
  /** The node's address on the network (.1/20), when it publishes something of it. */
  gateway: string | null;
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
    const allowed: AllowedConnection[] = [];
    for (const link of app.spec.links) {
      const from = byId.get(link.from.instance);
      const to = byId.get(link.to.instance);
      if (!from || !to) continue;
      allowed.push({
        from: from.address,
        to: to.address,
        protocol: link.protocol,
        port: link.port,
      });
    }
    const published = app.spec.exposures.flatMap((e) =>
      instances
        .filter(
          (i) => i.component === e.component && i.node === self && e.terminalPort !== undefined,
        )
        // One instance per node port: with several of a component here, the first.
        .slice(0, 1)
        .map((i) => ({
          instance: i.id,
          port: e.port,
          address: i.address,
          terminalPort: e.terminalPort,
          protocol: e.protocol,
        })),
    );
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
      allowed,
      published,
      gateway: published.length ? `${appGateway(net)}/${APP_NET_PREFIX}` : null,
    });
  }
  return plans;
}

/** An application's chain: ARP, replies, the allowed connections, and drop for the rest. */
export function appChainRules(p: AppNetPlan, replies: Replies): string[] {
  const rules = ["ether type arp accept"];
  if (replies === "conntrack") rules.push("ct state established,related accept");
  for (const a of p.allowed) {
    rules.push(`ip saddr ${a.from} ip daddr ${a.to} ${a.protocol} dport ${a.port} accept`);
    if (replies === "port")
      rules.push(`ip saddr ${a.to} ip daddr ${a.from} ${a.protocol} sport ${a.port} accept`);
  }
  rules.push("drop");
  return rules;
}

/** The whole `table bridge flatgrid`, replaced in one `nft -f` transaction. */
export function nftRuleset(plans: readonly AppNetPlan[], replies: Replies): string {
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
  // The node's own address on a network (where it publishes a terminal) stays on this
  // node: every node that publishes something of an application has the same one.
  lines.push("  chain output {", "    type filter hook output priority 0; policy accept;");
  for (const p of plans)
    if (p.gateway) {
      const gw = p.gateway.split("/")[0];
      lines.push(
        `    oifname "${p.vxlan}" ether type arp arp saddr ip ${gw} drop`,
        `    oifname "${p.vxlan}" ether type ip ip saddr ${gw} drop`,
      );
    }
  lines.push("  }");
  for (const p of plans) {
    lines.push(`  chain app${p.net} {`, `    comment "${p.app}"`);
    for (const r of appChainRules(p, replies)) lines.push(`    ${r}`);
    lines.push("  }");
  }
  lines.push("}");
  return `${lines.join("\n")}\n`;
}

/**
 * The whole `table ip flatgrid`: published terminals. A connection to this node's address on
 * a published port goes to the instance (DNAT; masqueraded, so the guest needs no route),
 * and nothing else is forwarded into or out of an application's network.
 */
export function natRuleset(self: string, plans: readonly AppNetPlan[]): string {
  const dnat: string[] = [];
  const masq: string[] = [];
  for (const p of plans)
    for (const x of p.published) {
      dnat.push(
        `    ip daddr ${self} ${x.protocol} dport ${x.port} dnat to ${x.address}:${x.terminalPort}`,
      );
      masq.push(
        `    oifname "${p.bridge}" ip daddr ${x.address} ${x.protocol} dport ${x.terminalPort} masquerade`,
      );
    }
  return `${[
    "table ip flatgrid",
    "delete table ip flatgrid",
    "table ip flatgrid {",
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    ...dnat,
    "  }",
    // Clients on the node itself reach a published terminal at the node's address too.
    "  chain output {",
    "    type nat hook output priority -100; policy accept;",
    ...dnat,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    ...masq,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority 0; policy accept;",
    // Routed only: frames bridged within a network (fgb to fgb) pass here too when the
    // kernel hands bridged traffic to IP hooks (br_netfilter), and are not ours to judge.
    '    iifname != "fgb*" oifname "fgb*" ct status dnat accept',
    '    iifname != "fgb*" oifname "fgb*" drop',
    '    iifname "fgb*" oifname != "fgb*" ct state established,related accept',
    '    iifname "fgb*" oifname != "fgb*" drop',
    "  }",
    "}",
  ].join("\n")}\n`;
}
