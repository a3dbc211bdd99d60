import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cpus, hostname } from "node:os";

/**
 * What this node has: read from /proc and /sys directly (cheap enough to repeat every few
 * seconds). The node registry publishes it; the console shows it.
 */
export interface Inventory {
  hostname: string;
  cpus: number;
  cpuModel: string;
  memoryMiB: number;
  memoryAvailableMiB: number;
  load: [number, number, number];
  kvm: boolean;
  /** Ethernet-like links with their MAC and whether a cable is in. */
  links: { name: string; mac: string; up: boolean }[];
  /** Whole local disks (no partitions, loop, ram or device-mapper devices). */
  disks: { name: string; sizeGiB: number; rotational: boolean; removable: boolean }[];
  kernel: string;
  uptimeS: number;
}

function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

export function parseMeminfo(text: string): { totalKiB: number; availableKiB: number } {
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return { totalKiB: field("MemTotal"), availableKiB: field("MemAvailable") };
}

export function parseLoadavg(text: string): [number, number, number] {
  const [a = 0, b = 0, c = 0] = text.split(" ").slice(0, 3).map(Number);
  return [a, b, c];
}

function links(): Inventory["links"] {
  let names: string[] = [];
  try {
    names = readdirSync("/sys/class/net").filter((n) => n !== "lo");
  } catch {
    return [];
  }
  return names.sort().map((name) => ({
    name,
    mac: read(`/sys/class/net/${name}/address`).trim(),
    up: read(`/sys/class/net/${name}/operstate`).trim() === "up",
  }));
}

const VIRTUAL_BLOCK = /^(loop|ram|dm-|zram|md|sr|nbd)/;

function disks(): Inventory["disks"] {
  let names: string[] = [];
  try {
    names = readdirSync("/sys/block").filter((n) => !VIRTUAL_BLOCK.test(n));
  } catch {
    return [];
  }
  return names.sort().map((name) => ({
    name,
    // /sys/block/X/size counts 512-byte sectors whatever the device's own sector size.
    sizeGiB: Math.round((Number(read(`/sys/block/${name}/size`).trim() || 0) * 512) / 2 ** 30),
    rotational: read(`/sys/block/${name}/queue/rotational`).trim() === "1",
    removable: read(`/sys/block/${name}/removable`).trim() === "1",
  }));
}

export function readInventory(): Inventory {
  const mem = parseMeminfo(read("/proc/meminfo"));
  const cpuList = cpus();
  return {
    hostname: hostname(),
    cpus: cpuList.length,
    cpuModel: cpuList[0]?.model ?? "unknown",
    memoryMiB: Math.round(mem.totalKiB / 1024),
    memoryAvailableMiB: Math.round(mem.availableKiB / 1024),
    load: parseLoadavg(read("/proc/loadavg")),
    kvm: existsSync("/dev/kvm"),
    links: links(),
    disks: disks(),
    kernel: read("/proc/sys/kernel/osrelease").trim(),
    uptimeS: Math.round(Number(read("/proc/uptime").split(" ")[0] ?? 0)),
  };
}
