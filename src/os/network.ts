import { execFile } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import type { NodeConfig } from "./node-config.js";
import type { ServiceSpecInput } from "./service-spec.js";

/**
 * The node's network: its Ethernet interface brought up at boot with a static address or a
 * DHCP client, and the same settings applied again while it runs, when an operator changes
 * them on the console (or with `flatgrid config set`).
 */

const run = promisify(execFile);

export type Note = (msg: string, level?: number) => void;

/** The node's Ethernet interfaces, sorted: the first is the node's own unless flatgrid.iface says. */
export function ethernetLinks(): string[] {
  try {
    return readdirSync("/sys/class/net")
      .filter((name) => name !== "lo")
      .filter((name) => {
        try {
          // type 1 is ARPHRD_ETHER; the bridges and taps (tun_flags) of the node's VMs are
          // Ethernet too, but never the node's own.
          const entries = readdirSync(`/sys/class/net/${name}`);
          return (
            readFileSync(`/sys/class/net/${name}/type`, "utf8").trim() === "1" &&
            !entries.includes("bridge") &&
            !entries.includes("tun_flags")
          );
        } catch {
          return false;
        }
      })
      .sort();
  } catch {
    return [];
  }
}

/**
 * Brings up lo and the node's interface: static addresses now, or a DHCP client service.
 * Returns the interface (null: none found).
 */
export async function bringUpNetwork(
  config: NodeConfig,
  note: Note,
  services: ServiceSpecInput[],
): Promise<string | null> {
  await run("ip", ["link", "set", "lo", "up"]).catch(() => note("network: lo did not come up", 50));
  const iface = config.iface ?? ethernetLinks()[0];
  if (!iface) {
    note("network: no Ethernet interface found; the node stays without network", 50);
    return null;
  }
  try {
    await run("ip", ["link", "set", iface, "up"]);
  } catch (err) {
    note(`network: cannot bring ${iface} up: ${(err as Error).message}`, 50);
    return iface;
  }
  if (config.net === "dhcp") {
    note(`network: DHCP on ${iface}`);
    services.push({
      name: "dhcp",
      description: `DHCP client on ${iface}`,
      command: ["udhcpc", "-f", "-i", iface, "-s", "/usr/share/flatgrid/udhcpc.sh"],
      readiness: { type: "log", pattern: "lease of .* obtained" },
      readyTimeoutMs: 60_000,
    });
    return iface;
  }
  try {
    await run("ip", ["addr", "replace", config.ip ?? "", "dev", iface]);
    await routeAndNameServers(config);
    note(`network: ${iface} ${config.ip}${config.gateway ? ` via ${config.gateway}` : ""}`);
  } catch (err) {
    note(`network: static set-up of ${iface} failed: ${(err as Error).message}`, 50);
  }
  return iface;
}

/** A static node's default route and name servers, as its settings give them. */
async function routeAndNameServers(config: NodeConfig): Promise<void> {
  if (config.gateway) await run("ip", ["route", "replace", "default", "via", config.gateway]);
  if (config.dns.length) {
    writeFileSync("/etc/resolv.conf", config.dns.map((d) => `nameserver ${d}\n`).join(""));
  }
}

/** The network settings that bringUpNetwork reads. */
const NETWORK_FIELDS = ["net", "iface", "ip", "gateway", "dns"] as const;

/** Whether these changes (networkChanges) give the node another address, or may. */
export function readdressing(changes: readonly string[]): boolean {
  return changes.some((k) => ["flatgrid.net", "flatgrid.iface", "flatgrid.ip"].includes(k));
}

/** Which network settings differ between two configurations. Pure. */
export function networkChanges(before: NodeConfig, after: NodeConfig): string[] {
  return NETWORK_FIELDS.filter((f) => JSON.stringify(before[f]) !== JSON.stringify(after[f])).map(
    (f) => `flatgrid.${f}`,
  );
}

/** What reapplyNetwork does to the supervisor's services. */
export interface NetworkServices {
  has(name: string): boolean;
  remove(name: string): Promise<void>;
  /** Defines and starts a service; resolves once it is ready (or has failed to be). */
  add(spec: ServiceSpecInput): Promise<void>;
}

/**
 * Applies changed network settings to the running node: the DHCP client stops (its lease
 * is dropped), the old interface loses its IPv4 addresses and routes, and the new settings
 * come up as at boot. `current` is the interface brought up at boot (or last time): by now
 * the node may have more, so the first one is not necessarily it. Returns the interface
 * now. Whatever reads the node's address at its start (the grid service) is the caller's
 * to restart. A new gateway or name servers alone leave the address, and the connections
 * on it, as they are.
 */
export async function reapplyNetwork(
  before: NodeConfig,
  after: NodeConfig,
  current: string | null,
  note: Note,
  services: NetworkServices,
): Promise<string | null> {
  if (!readdressing(networkChanges(before, after))) {
    // A DHCP node takes its gateway and name servers from its lease.
    if (after.net === "static") {
      try {
        if (before.gateway && !after.gateway) await run("ip", ["route", "del", "default"]);
        await routeAndNameServers(after);
        note(
          `network: ${after.gateway ? `default route via ${after.gateway}` : "no default route"}${after.dns.length ? `, name servers ${after.dns.join(" ")}` : ""}`,
        );
      } catch (err) {
        note(`network: cannot set the route or name servers: ${(err as Error).message}`, 50);
      }
    }
    return current;
  }
  if (services.has("dhcp")) await services.remove("dhcp");
  const old = before.iface ?? current ?? ethernetLinks()[0];
  if (old) {
    // Only this interface's: the application networks' bridges and tunnels are left alone.
    await run("ip", ["-4", "route", "flush", "dev", old]).catch(() => {});
    await run("ip", ["-4", "addr", "flush", "dev", old, "scope", "global"]).catch((err: Error) =>
      note(`network: cannot remove ${old}'s addresses: ${err.message}`, 50),
    );
  }
  const wanted: ServiceSpecInput[] = [];
  const now = await bringUpNetwork({ ...after, iface: after.iface ?? current }, note, wanted);
  for (const spec of wanted) await services.add(spec);
  return now;
}
