import { spawnSync } from "node:child_process";
import { SimError } from "./errors.js";

/**
 * The simulator's private network: one network namespace holding a bridge and one tap per
 * node. The namespace has no link to the outside and no default route, and forwarding is
 * off (the default in a new namespace), so nothing the nodes send can leave it.
 */

export const NS_PREFIX = "fgsim-";
export const BRIDGE = "br0";

function ip(args: string[]): string {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.error) throw new SimError(`cannot run ip: ${r.error.message}`, "host");
  if (r.status !== 0)
    throw new SimError(`ip ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim()}`, "host");
  return r.stdout;
}

export function namespaceExists(ns: string): boolean {
  const out = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout ?? "";
  return out.split("\n").some((line) => line.split(" ")[0] === ns);
}

/** Creates the namespace with lo and the bridge up; `address` is the bridge's, with prefix. */
export function createNetwork(ns: string, address: string): void {
  if (!ns.startsWith(NS_PREFIX)) throw new SimError(`not a simulator namespace: ${ns}`, "host");
  ip(["netns", "add", ns]);
  try {
    ip(["-n", ns, "link", "set", "lo", "up"]);
    // Snooping off: mDNS must reach every node whatever the bridge has learnt of IGMP.
    ip(["-n", ns, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0"]);
    ip(["-n", ns, "addr", "add", address, "dev", BRIDGE]);
    ip(["-n", ns, "link", "set", BRIDGE, "up"]);
  } catch (err) {
    removeNetwork(ns);
    throw err;
  }
}

/**
 * Another address on the bridge. nodad: an IPv6 address is usable at once, not tentative
 * for a second of duplicate detection on a bridge where nothing else could hold it.
 */
export function addBridgeAddress(ns: string, address: string): void {
  ip([
    "-n",
    ns,
    "addr",
    "add",
    address,
    "dev",
    BRIDGE,
    ...(address.includes(":") ? ["nodad"] : []),
  ]);
}

/** A persistent tap on the bridge, so that QEMU, started inside the namespace, attaches to it. */
export function addTap(ns: string, tap: string): void {
  ip(["-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"]);
  ip(["-n", ns, "link", "set", tap, "master", BRIDGE]);
  ip(["-n", ns, "link", "set", tap, "up"]);
}

export function pidsInNamespace(ns: string): number[] {
  const out = spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" }).stdout ?? "";
  return out
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

/** SIGKILLs every process in a namespace (but ours) until none is left, for up to 5 s. */
export function killProcessesIn(ns: string): void {
  for (let i = 0; i < 50; i++) {
    const pids = pidsInNamespace(ns).filter((p) => p !== process.pid);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    spawnSync("sleep", ["0.1"]);
  }
}

/** Kills whatever still runs in the namespace (only our QEMUs should) and deletes it. */
export function removeNetwork(ns: string): void {
  if (!ns.startsWith(NS_PREFIX) || !namespaceExists(ns)) return;
  killProcessesIn(ns);
  ip(["netns", "del", ns]);
}

/** A command line that runs `argv` inside the namespace. */
export function inNamespace(ns: string, argv: string[]): string[] {
  return ["ip", "netns", "exec", ns, ...argv];
}
