import { execFile } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { coldplug } from "./coldplug.js";
import { type DataPartitionStatus, formatBytes, setUpDataPartition } from "./data-partition.js";
import { bringUpNetwork, ethernetLinks, type Note } from "./network.js";
import type { NodeConfig } from "./node-config.js";
import type { ServiceSpecInput } from "./service-spec.js";

const run = promisify(execFile);

/**
 * How this supervisor was started, as native/init tells it in FLATGRID_BOOT:
 *  - os: init is PID 1 of the machine: this is the node OS and owns the hardware;
 *  - namespace: init is PID 1 of a PID namespace (tests, the demo);
 *  - process: no init, or init not as PID 1 (development).
 * Only "os" touches the machine: modules, hostname, network.
 */
export type BootMode = "os" | "namespace" | "process";

export function bootMode(env: NodeJS.ProcessEnv = process.env): BootMode {
  const mode = env.FLATGRID_BOOT;
  return mode === "os" || mode === "namespace" ? mode : "process";
}

/**
 * Modules every node needs whatever its hardware; the drivers of its hardware (NICs, disk
 * controllers, USB keyboards, virtio) come by coldplug (coldplug.ts).
 */
export const BASE_MODULES = [
  "ext4",
  "kvm_intel",
  "kvm_amd",
  "tun",
  "vhost_net",
  "vhost_vsock",
  "bridge",
  "vxlan",
  "nf_tables",
  "overlay",
];

export interface SystemReport {
  /** One line per step, for the supervisor log and the console. */
  notes: { level: number; msg: string }[];
  /** Services that the bring-up wants run (the DHCP client). */
  services: ServiceSpecInput[];
  /** The node's network interface, as brought up (null: none, or not ours to touch). */
  iface: string | null;
}

/**
 * The first step of an OS boot: kernel modules (disk drivers, ext4), then the data partition,
 * so that the node's own configuration stored there can be read before the rest comes up.
 */
export async function bringUpStorage(
  config: NodeConfig,
  mode: BootMode,
): Promise<{ notes: SystemReport["notes"]; data: DataPartitionStatus | null }> {
  const notes: SystemReport["notes"] = [];
  const note = (msg: string, level = 30) => notes.push({ level, msg });
  if (mode !== "os") {
    note(
      `boot mode ${mode}: not the node OS, so kernel modules, disks, hostname and network are left as they are`,
    );
    return { notes, data: null };
  }
  const drivers = await coldplug((aliases) =>
    run("modprobe", ["-q", "-a", ...aliases]).then(
      () => {},
      // One alias that fails to load (a driver for hardware that is not quite there) is
      // not the others' failure: modprobe -a goes on, and so does the boot.
      () => {},
    ),
  );
  note(
    `hardware drivers (coldplug): ${drivers.length ? drivers.join(", ") : "none needed beyond the kernel's own"}`,
  );
  await loadModules([...BASE_MODULES, ...config.modules], note);
  const data = await setUpDataPartition({ format: config.format });
  note(`data partition: ${data.reason}`, data.state === "mounted" ? 30 : 40);
  for (const disk of data.disks) {
    if (disk.device === data.device || disk.device === data.catalog?.device) continue;
    note(`disk ${disk.device} (${formatBytes(disk.sizeBytes)}): ${disk.verdict}`);
  }
  if (data.catalog)
    note(`appliance catalog: ${data.catalog.reason}`, data.catalog.mounted ? 30 : 40);
  return { notes, data };
}

export async function bringUpSystem(config: NodeConfig, mode: BootMode): Promise<SystemReport> {
  const report: SystemReport = { notes: [], services: [], iface: null };
  const note = (msg: string, level = 30) => report.notes.push({ level, msg });
  if (mode !== "os") return report;
  setHostname(config.hostname ?? defaultHostname(), note);
  report.iface = await bringUpNetwork(config, note, report.services);
  // The grid service: formation, join, etcd, election, registry. Its state lives under
  // /var/lib/flatgrid: on the FLATGRID data partition, or in RAM when there is none.
  report.services.push({
    name: "grid",
    description: "this node's part in its grid: discovery, join, etcd, controller election",
    command: [
      process.execPath,
      fileURLToPath(new URL("../grid/main.js", import.meta.url)),
      "--state-dir=/var/lib/flatgrid/grid",
    ],
    logFormat: "json",
    stopTimeoutMs: 5000,
  });
  for (const tty of config.consoles) {
    // A server without a graphics card has no tty1; a serial port that is not there either.
    if (!existsSync(`/dev/${tty}`)) {
      note(`console: /dev/${tty} does not exist: no console there`, 40);
      continue;
    }
    report.services.push({
      name: `console-${tty.toLowerCase()}`,
      description: `the full-screen console on /dev/${tty}`,
      command: [
        process.execPath,
        fileURLToPath(new URL("../cli/main.js", import.meta.url)),
        "console",
        `--tty=/dev/${tty}`,
      ],
      env: { TERM: consoleTerm(tty) },
      // A crash of the UI must never matter to the node: it comes back, for as long as it takes.
      restart: { initialDelayMs: 1000, maxDelayMs: 10_000, maxFailures: 1000 },
      stopTimeoutMs: 2000,
    });
  }
  if (config.debugShell) {
    note(`debug shell on /dev/${config.debugShell} (flatgrid.debugshell)`, 40);
    report.services.push({
      name: "debug-shell",
      description: `root shell on /dev/${config.debugShell}`,
      // The supervisor starts it in a new session, so opening the port makes it the shell's
      // controlling terminal (job control, ^C).
      command: [
        "/bin/sh",
        "-c",
        `exec /bin/sh -i </dev/${config.debugShell} >/dev/${config.debugShell} 2>&1`,
      ],
      restart: { initialDelayMs: 500, maxFailures: 1000 },
    });
  }
  return report;
}

async function loadModules(modules: string[], note: Note): Promise<void> {
  const missing: string[] = [];
  for (const module of modules) {
    try {
      await run("modprobe", ["-q", module]);
    } catch {
      missing.push(module);
    }
  }
  // kvm_amd on an Intel machine, say: a note, not an error.
  note(
    `kernel modules: ${modules.length - missing.length} loaded` +
      (missing.length ? `, not loaded: ${missing.join(", ")}` : ""),
  );
}

function setHostname(name: string, note: Note): void {
  try {
    writeFileSync("/proc/sys/kernel/hostname", name);
    note(`hostname: ${name}`);
  } catch (err) {
    note(`hostname: could not set ${name}: ${(err as Error).message}`, 50);
  }
}

/** flatgrid-XXXXXX from the first Ethernet MAC: stable across reboots, unique in a rack. */
function defaultHostname(): string {
  const iface = ethernetLinks()[0];
  if (!iface) return "flatgrid";
  const mac = readFileSync(`/sys/class/net/${iface}/address`, "utf8").trim();
  return `flatgrid-${mac.split(":").slice(3).join("")}`;
}

/**
 * What is at the other end of a console's terminal: the kernel's own VT on tty1..63; on a
 * serial line, whatever an operator attached, today nearly always an xterm-like emulator
 * (IPMI serial-over-LAN, minicom, screen, `flatgrid sim console --screen`) that draws the
 * linux terminal's line characters wrong.
 */
export function consoleTerm(tty: string): string {
  return /^tty\d+$/.test(tty) ? "linux" : "xterm";
}
