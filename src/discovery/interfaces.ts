/**
 * The network interfaces discovery runs on: by default every interface that is up,
 * multicast-capable, not loopback and has an IPv4 address; or the ones named. The choice is
 * pure (selectInterfaces); readSystem reads os.networkInterfaces() and /sys/class/net.
 */
import { readFileSync } from "node:fs";
import { type NetworkInterfaceInfo, networkInterfaces } from "node:os";
import type { InterfaceAddresses } from "./records.js";

export interface Subnet {
  address: string;
  prefixLength: number;
}

export interface NetInterface {
  name: string;
  /** The IPv4 address the interface's socket joins the group on. */
  ipv4: string;
  /** Every IPv4 address with its prefix: packets are attributed to an interface by these. */
  subnets: Subnet[];
  /** What the host records announce on this interface. */
  addresses: InterfaceAddresses;
}

export interface SystemInterfaces {
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>;
  /** IFF_* flags of /sys/class/net/NAME/flags, or undefined when unknown. */
  flags(name: string): number | undefined;
  /** /sys/class/net/NAME/operstate, or undefined when unknown. */
  operstate(name: string): string | undefined;
}

export interface SelectOptions {
  /** Only these interfaces (by name). Default: all usable ones. */
  names?: readonly string[];
  /** Announce IPv6 addresses (AAAA). Default true. */
  ipv6?: boolean;
}

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;
const IFF_MULTICAST = 0x1000;
const DOWN_STATES = new Set(["down", "lowerlayerdown", "notpresent", "dormant"]);

function readSys(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

export function readSystem(): SystemInterfaces {
  return {
    interfaces: networkInterfaces(),
    flags: (name) => {
      const text = readSys(`/sys/class/net/${name}/flags`);
      return text === undefined ? undefined : Number.parseInt(text, 16);
    },
    operstate: (name) => readSys(`/sys/class/net/${name}/operstate`),
  };
}

export function selectInterfaces(
  sys: SystemInterfaces,
  options: SelectOptions = {},
): NetInterface[] {
  const wanted = options.names ? new Set(options.names) : undefined;
  const out: NetInterface[] = [];
  for (const [name, infos] of Object.entries(sys.interfaces)) {
    if (!infos || (wanted && !wanted.has(name))) continue;
    const flags = sys.flags(name);
    if (flags !== undefined) {
      if ((flags & IFF_UP) === 0 || (flags & IFF_MULTICAST) === 0) continue;
      if (!wanted && (flags & IFF_LOOPBACK) !== 0) continue;
    }
    if (!wanted && infos.some((i) => i.internal)) continue;
    if (DOWN_STATES.has(sys.operstate(name) ?? "up")) continue;
    const v4 = infos.filter((i) => i.family === "IPv4");
    const first = v4[0];
    if (!first) continue;
    const v6 = options.ipv6 === false ? [] : infos.filter((i) => i.family === "IPv6");
    out.push({
      name,
      ipv4: first.address,
      subnets: v4.map((i) => ({ address: i.address, prefixLength: prefixOf(i) })),
      addresses: {
        ipv4: unique(v4.map((i) => i.address)),
        ipv6: unique(v6.map((i) => i.address)),
      },
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}

function prefixOf(info: NetworkInterfaceInfo): number {
  const cidr = info.cidr?.split("/")[1];
  if (cidr !== undefined) return Number(cidr);
  return info.netmask
    .split(".")
    .map((o) => Number(o).toString(2).replace(/0/g, "").length)
    .reduce((a, b) => a + b, 0);
}

function ipv4Number(address: string): number {
  return address.split(".").reduce((n, o) => n * 256 + Number(o), 0);
}

export function inSubnet(address: string, subnet: Subnet): boolean {
  if (subnet.prefixLength <= 0) return true;
  const size = 2 ** (32 - Math.min(32, subnet.prefixLength));
  return Math.floor(ipv4Number(address) / size) === Math.floor(ipv4Number(subnet.address) / size);
}

/**
 * The interface a packet from `source` came in on: the one with the longest matching prefix.
 * On Linux every socket bound to the port sees every interface's multicast, so the source
 * address is what tells them apart. Undefined for a source on none of our subnets.
 */
export function interfaceForSource(
  source: string,
  interfaces: readonly NetInterface[],
): NetInterface | undefined {
  let best: { iface: NetInterface; prefix: number } | undefined;
  for (const iface of interfaces) {
    for (const s of iface.subnets) {
      if (inSubnet(source, s) && (!best || s.prefixLength > best.prefix))
        best = { iface, prefix: s.prefixLength };
    }
  }
  return best?.iface;
}

/** A string that changes when an interface's addresses change. */
export function interfaceSignature(iface: NetInterface): string {
  return [iface.name, ...iface.subnets.map((s) => `${s.address}/${s.prefixLength}`)]
    .concat(iface.addresses.ipv6)
    .join(" ");
}
