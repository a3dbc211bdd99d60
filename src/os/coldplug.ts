import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Coldplug: the node has no udev, so the supervisor loads the drivers of the hardware it
 * finds itself. Every device in sysfs names what it is in its `modalias`; modprobe looks the
 * aliases up in the image's modules.alias (kmod does the matching). Loading a bus driver
 * (virtio_pci, a USB host controller) makes new devices appear, so this goes round until no
 * new alias shows up.
 */

function readAlias(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8").trim().split("\n")[0] || undefined;
  } catch {
    return undefined; // No modalias: nothing a driver could match.
  }
}

/**
 * The modalias of every device on every bus under `sys` (/sys), and the CPUs' (their
 * features: that is how kvm_intel or kvm_amd matches); one entry per alias.
 */
export function readModaliases(sys = "/sys"): string[] {
  const aliases = new Set<string>();
  const cpu = readAlias(join(sys, "devices/system/cpu/modalias"));
  if (cpu) aliases.add(cpu);
  let buses: string[] = [];
  try {
    buses = readdirSync(join(sys, "bus"));
  } catch {
    return [...aliases];
  }
  for (const bus of buses) {
    let devices: string[] = [];
    try {
      devices = readdirSync(join(sys, "bus", bus, "devices"));
    } catch {
      continue;
    }
    for (const device of devices) {
      const alias = readAlias(join(sys, "bus", bus, "devices", device, "modalias"));
      if (alias) aliases.add(alias);
    }
  }
  return [...aliases].sort();
}

/** Names of the loaded modules, from /proc/modules. */
export function loadedModules(procModules = "/proc/modules"): Set<string> {
  try {
    return new Set(
      readFileSync(procModules, "utf8")
        .split("\n")
        .map((l) => l.split(" ")[0] ?? "")
        .filter(Boolean),
    );
  } catch {
    return new Set();
  }
}

/**
 * Loads the drivers for every device there is, in rounds, until a round brings no new
 * alias; returns the modules it loaded. `modprobe` is given many aliases at once (-a), and
 * one that matches nothing is no error (-q): most devices need no driver.
 */
export async function coldplug(
  modprobe: (aliases: string[]) => Promise<void>,
  sys = "/sys",
  procModules = "/proc/modules",
  rounds = 4,
): Promise<string[]> {
  const before = loadedModules(procModules);
  const tried = new Set<string>();
  for (let round = 0; round < rounds; round++) {
    const fresh = readModaliases(sys).filter((a) => !tried.has(a));
    if (fresh.length === 0) break;
    for (const a of fresh) tried.add(a);
    await modprobe(fresh);
  }
  return [...loadedModules(procModules)].filter((m) => !before.has(m)).sort();
}
