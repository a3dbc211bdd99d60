import type { AppRecord } from "../controller/index.js";
import { APP_MTU, tapName } from "./net-names.js";

/**
 * What one instance's VM looks like, from its application alone: the same on whatever node
 * runs it, so an instance that moves keeps its address and its peers need no new settings.
 * Pure.
 *
 * Addresses: application number n (given at create, see app-store) owns the /20 at
 * 10.128.0.0 + n × 4096; .1 is kept for the node side of the segment, and instance k of the
 * application (in the order of its descriptor) is .2 + k.
 */

export const APP_NET_BASE = (10 << 24) | (128 << 16);
export const APP_NET_PREFIX = 20;
export const APP_NET_SIZE = 1 << (32 - APP_NET_PREFIX);
/** 10.128.0.0/9 holds this many /20s. */
export const APP_NETS = (1 << 23) / APP_NET_SIZE;
/** Instances one application may have: its /20 less network, .1 and broadcast. */
export const MAX_INSTANCES = APP_NET_SIZE - 3;

export class InstancePlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InstancePlanError";
  }
}

function ipv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

export function appSubnet(net: number): string {
  if (!Number.isInteger(net) || net < 0 || net >= APP_NETS)
    throw new InstancePlanError(`application network ${net} is outside 0..${APP_NETS - 1}`);
  return `${ipv4(APP_NET_BASE + net * APP_NET_SIZE)}/${APP_NET_PREFIX}`;
}

/** The node's own address on an application's network (.1), where it publishes a terminal. */
export function appGateway(net: number): string {
  appSubnet(net);
  return ipv4(APP_NET_BASE + net * APP_NET_SIZE + 1);
}

export function instanceAddress(net: number, index: number): string {
  appSubnet(net);
  if (!Number.isInteger(index) || index < 0 || index >= MAX_INSTANCES)
    throw new InstancePlanError(`instance number ${index} is outside 0..${MAX_INSTANCES - 1}`);
  return ipv4(APP_NET_BASE + net * APP_NET_SIZE + 2 + index);
}

/** A locally administered unicast MAC from the address: unique wherever the instance runs. */
export function instanceMac(address: string): string {
  const b = address.split(".").map(Number);
  return ["02", "fb", ...b.map((x) => x.toString(16).padStart(2, "0"))].join(":");
}

/** The class's parts on this node, checked against their sha256 (see ClassImages). */
export interface ClassParts {
  kernel: string;
  initrd: string | null;
  rootfs: string;
}

export interface InstancePlan {
  /** `app/instance`: unique on a grid. */
  key: string;
  app: string;
  instance: string;
  class: string;
  address: string;
  mac: string;
  /** Its tap on the node, in its application's bridge. */
  tap: string;
  /** The application's network number (its bridge and VXLAN segment). */
  net: number;
  memoryMiB: number;
  vcpus: number;
  /** Its data volume, MiB (0: none): the second disk, /dev/vdb, at /data in the guest. */
  volumeMiB: number;
  /** The guest's kernel command line: console, then fg.KEY=VALUE words. */
  cmdline: string;
  parts: ClassParts;
}

/** fg.KEY=VALUE with VALUE percent-encoded, as the guest init decodes it. */
function word(key: string, value: string | number | boolean): string {
  return `fg.${key}=${encodeURIComponent(String(value))}`;
}

export function planInstance(app: AppRecord, instanceId: string, parts: ClassParts): InstancePlan {
  const spec = app.spec;
  const net = app.net;
  if (net === undefined)
    throw new InstancePlanError(
      `application ${app.name} has no network number (it was stored by an older flatgrid)`,
    );
  const index = spec.instances.findIndex((i) => i.id === instanceId);
  const inst = spec.instances[index];
  if (!inst) throw new InstancePlanError(`application ${app.name} has no instance ${instanceId}`);
  const address = instanceAddress(net, index);
  const addressOf = (id: string) =>
    instanceAddress(
      net,
      spec.instances.findIndex((i) => i.id === id),
    );
  // Each output terminal of this instance: the inputs it reaches, host:port in id order.
  const peers = new Map<string, string[]>();
  for (const link of spec.links) {
    if (link.from.instance !== inst.id) continue;
    const list = peers.get(link.from.terminal) ?? [];
    list.push(`${addressOf(link.to.instance)}:${link.port}`);
    peers.set(link.from.terminal, list);
  }
  const words = [
    // quiet: every byte on an emulated serial port is a VM exit; the guest init still speaks.
    "console=ttyS0 quiet",
    word("name", inst.id),
    word("app", app.name),
    word("ip", `${address}/${APP_NET_PREFIX}`),
    word("mtu", APP_MTU),
    ...((inst.volumeMiB ?? 0) > 0 ? [word("volume", "vdb")] : []),
    ...[...peers.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([terminal, list]) => word(`t.${terminal}`, list.join(","))),
    ...Object.entries(inst.properties)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => word(`p.${k}`, v)),
  ];
  return {
    key: `${app.name}/${inst.id}`,
    app: app.name,
    instance: inst.id,
    class: inst.class,
    address,
    mac: instanceMac(address),
    tap: tapName(net, index),
    net,
    memoryMiB: inst.memoryMiB,
    vcpus: Math.max(1, Math.ceil(inst.cpus)),
    volumeMiB: inst.volumeMiB ?? 0,
    cmdline: words.join(" "),
    parts,
  };
}
