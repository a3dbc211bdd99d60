import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import type { AccelChoice } from "./accel.js";
import { SimError } from "./errors.js";
import { inNamespace } from "./netns.js";

export const QEMU = "qemu-system-x86_64";

/** Where a simulated server boots from. */
export type BootSource =
  /** QEMU loads the kernel and initrd itself (-kernel): the fastest, no firmware step. */
  | { kind: "kernel"; kernel: string; initrd: string; cmdline: string }
  /** The NIC's iPXE ROM, from the simulator's DHCP and TFTP server, as a rack would. */
  | { kind: "network" }
  /** The hybrid ISO as a CD, as an operator installs from media. */
  | { kind: "cdrom"; iso: string };

/** Everything QEMU needs to run one simulated server. */
export interface QemuServer {
  name: string;
  accel: AccelChoice;
  memoryMiB: number;
  cpus: number;
  boot: BootSource;
  /** UEFI firmware (OVMF.fd); absent: SeaBIOS. */
  uefi?: string;
  /** A persistent tap in the namespace QEMU runs in. */
  tap: string;
  mac: string;
  /** Raw disk files, in order: /dev/vda, /dev/vdb... */
  disks: string[];
  /** Raw disk files after those, read-only (one file may serve every node). */
  readOnlyDisks?: string[];
  /** ttyS0: a unix socket to attach to, and a log that records everything, attached or not. */
  consoleSocket: string;
  consoleLog: string;
  /** ttyS1, where the node runs its debug shell (flatgrid.debugshell=ttyS1). */
  shellSocket: string;
  shellLog: string;
  /**
   * ttyS2, where the node runs its full-screen console (flatgrid.console=ttyS2): the
   * server's screen, as a serial console server would give it. Absent in older states.
   */
  screenSocket?: string;
  qmpSocket: string;
  pidFile: string;
}

function serialPort(id: string, socket: string, log?: string): string[] {
  // wait=off: QEMU runs with nobody attached; logfile keeps what nobody was there to read.
  return [
    "-chardev",
    `socket,id=${id},path=${socket},server=on,wait=off${log ? `,logfile=${log},logappend=on` : ""}`,
    "-serial",
    `chardev:${id}`,
  ];
}

/** QEMU's arguments for a server, without -daemonize. Pure. */
export function qemuArgs(s: QemuServer): string[] {
  return [
    "-name",
    `flatgrid-${s.name}`,
    // No default devices: no VGA, no monitor, and above all no default (user-mode) NIC.
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-accel",
    s.accel.accel,
    "-cpu",
    s.accel.cpu,
    "-m",
    String(s.memoryMiB),
    "-smp",
    String(s.cpus),
    ...(s.uefi ? ["-bios", s.uefi] : []),
    ...(s.boot.kind === "kernel"
      ? ["-kernel", s.boot.kernel, "-initrd", s.boot.initrd, "-append", s.boot.cmdline]
      : []),
    // First in the boot order: the node's own disk holds a file system, not a boot loader.
    ...(s.boot.kind === "cdrom"
      ? [
          "-drive",
          `file=${s.boot.iso},if=none,id=cd0,media=cdrom,readonly=on`,
          "-device",
          "ide-cd,drive=cd0,bootindex=0",
        ]
      : []),
    ...serialPort("console", s.consoleSocket, s.consoleLog),
    ...serialPort("shell", s.shellSocket, s.shellLog),
    // No log: a full-screen program's output is escape sequences, and it redraws on Ctrl-L.
    ...(s.screenSocket ? serialPort("screen", s.screenSocket) : []),
    "-qmp",
    `unix:${s.qmpSocket},server=on,wait=off`,
    ...s.disks.flatMap((file, i) => [
      "-drive",
      `file=${file},if=virtio,format=raw,index=${i},discard=unmap`,
    ]),
    ...(s.readOnlyDisks ?? []).flatMap((file, i) => [
      "-drive",
      `file=${file},if=virtio,format=raw,index=${s.disks.length + i},readonly=on`,
    ]),
    // A tap on the simulator's bridge: never QEMU user networking.
    "-netdev",
    `tap,id=net0,ifname=${s.tap},script=no,downscript=no`,
    "-device",
    // A network boot puts the NIC first in the firmware's boot order, before the disks.
    `virtio-net-pci,netdev=net0,mac=${s.mac}${s.boot.kind === "network" ? ",bootindex=0" : ""}`,
  ];
}

/**
 * Starts QEMU daemonized inside the namespace and returns its pid. QEMU forks, and its first
 * process exits only once the server is set up (tap opened, sockets listening), so errors
 * such as a busy tap come back here with QEMU's own words.
 */
export function startQemu(ns: string, server: QemuServer): number {
  const argv = inNamespace(ns, [
    QEMU,
    ...qemuArgs(server),
    "-daemonize",
    "-pidfile",
    server.pidFile,
  ]);
  const [cmd, ...args] = argv as [string, ...string[]];
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 120_000 });
  if (r.error) throw new SimError(`cannot run ${QEMU}: ${r.error.message}`, "qemu");
  if (r.status !== 0)
    throw new SimError(
      `${QEMU} for ${server.name} failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout).trim()}`,
      "qemu",
    );
  const pid = Number(readFileSync(server.pidFile, "utf8").trim());
  if (!Number.isSafeInteger(pid) || pid <= 0)
    throw new SimError(`${QEMU} for ${server.name} wrote no pid to ${server.pidFile}`, "qemu");
  return pid;
}

/** Whether `pid` is a live QEMU of ours: pids are reused, so the command line must match. */
export function qemuAlive(pid: number | null, pidFile: string): boolean {
  if (pid === null) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // A zombie is dead for our purposes (its parent has not reaped it yet).
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return argv[0]?.endsWith(QEMU) === true && argv.includes(pidFile) && state !== "Z";
  } catch {
    return false;
  }
}
