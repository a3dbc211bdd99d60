import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DATA_LABEL } from "../os/disk-signature.js";
import { NODE_CONF } from "../os/node-settings.js";
import { type AccelRequest, chooseAccel, probeHostKvm, tcgVcpusWarning } from "./accel.js";
import { fileSize } from "./console.js";
import { anyAlive, down } from "./down.js";
import { SimError } from "./errors.js";
import { startNetboot } from "./netboot.js";
import { addTap, createNetwork, NS_PREFIX } from "./netns.js";
import { QEMU, type QemuServer, startQemu } from "./qemu.js";
import { type ReadyNode, waitReady } from "./ready.js";
import {
  catalogImagePath,
  claimDir,
  nodeFiles,
  readState,
  resolveDir,
  type SimNode,
  type SimState,
  STATE_VERSION,
  tokenPath,
  writeState,
} from "./state.js";
import { type Progress, plural } from "./text.js";

export const DEFAULT_IMAGE = fileURLToPath(new URL("../../../build/image/", import.meta.url));
export const SUBNET_PREFIX = "10.215.0.";
export const BRIDGE_ADDRESS = `${SUBNET_PREFIX}254/24`;
/** A ULA /64 for the bridge's IPv6 router advertisements of a network boot (netboot.ts). */
export const SUBNET6 = "fd15:215::";
export const BRIDGE_ADDRESS6 = `${SUBNET6}fe/64`;
export const MAX_NODES = 32;
const GRID_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export interface UpOptions {
  nodes: number;
  dir?: string;
  /**
   * kernel (default): QEMU loads vmlinuz and initrd.img; pxe: the nodes boot over the
   * network; iso: from flatgrid.iso as a CD, configured by node.conf on their disks.
   */
  boot?: string;
  /** bios (default, SeaBIOS) or uefi (OVMF). */
  firmware?: string;
  memoryMiB?: number;
  cpus?: number;
  grid?: string;
  token?: string;
  accel?: AccelRequest;
  /** Directory with vmlinuz and initrd.img; default build/image of this checkout. */
  image?: string;
  diskGiB?: number;
  /** Disk files given to every node after its own blank disk (tests). */
  extraDisks?: string[];
  /**
   * An appliance catalog directory (build/catalog): put on a read-only disk labelled
   * FGCATALOG that every node mounts at /var/lib/flatgrid/catalog for its agent.
   */
  catalog?: string;
  timeoutMs?: number;
  progress?: Progress;
}

export interface UpResult {
  state: SimState;
  ready: ReadyNode[];
  /** Seconds from the first QEMU start to the last ready line. */
  seconds: number;
}

export const OVMF = "/usr/share/ovmf/OVMF.fd";
export const BOOTS = ["kernel", "pxe", "iso"] as const;
export type BootKind = (typeof BOOTS)[number];

function validate(o: UpOptions): void {
  if (o.boot !== undefined && !(BOOTS as readonly string[]).includes(o.boot))
    throw new SimError(`--boot must be ${BOOTS.join(", ")}, not ${o.boot}`, "bad-option");
  if (o.firmware !== undefined && o.firmware !== "bios" && o.firmware !== "uefi")
    throw new SimError(`--firmware must be bios or uefi, not ${o.firmware}`, "bad-option");
  if (o.firmware === "uefi" && !existsSync(OVMF))
    throw new SimError(
      `--firmware uefi needs OVMF (${OVMF}): apt-get install ovmf (npm run deps does it)`,
      "host",
    );
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > MAX_NODES)
    throw new SimError(`--nodes must be between 1 and ${MAX_NODES}`, "bad-option");
  if (o.memoryMiB !== undefined && o.memoryMiB < 512)
    throw new SimError("--memory must be at least 512 MiB: the node runs from RAM", "bad-option");
  if (o.cpus !== undefined && (o.cpus < 1 || o.cpus > 16))
    throw new SimError("--cpus must be between 1 and 16", "bad-option");
  if (o.grid !== undefined && !GRID_NAME.test(o.grid))
    throw new SimError("--grid must be a grid name: a-z, 0-9 and -, up to 63", "bad-option");
  if (o.token !== undefined && (o.token.length < 16 || /\s/.test(o.token)))
    throw new SimError("--token must have at least 16 characters and no spaces", "bad-option");
}

function imageFiles(dir: string): { kernel: string; initrd: string; iso: string } {
  const kernel = join(dir, "vmlinuz");
  const initrd = join(dir, "initrd.img");
  if (!existsSync(kernel) || !existsSync(initrd))
    throw new SimError(
      `no node image in ${dir} (vmlinuz and initrd.img): build it with \`npm run image\``,
      "no-image",
    );
  return { kernel, initrd, iso: join(dir, "flatgrid.iso") };
}

function checkQemu(): void {
  const r = spawnSync(QEMU, ["--version"], { stdio: "ignore" });
  if (r.error || r.status !== 0)
    throw new SimError(
      `${QEMU} is not installed: apt-get install qemu-system-x86 (npm run deps does it)`,
      "host",
    );
}

/** How much longer the grid's timings are on nodes emulated with TCG (measured: 10 holds). */
const TCG_TIMESCALE = 10;

export function nodeAddress(index: number): string {
  return `${SUBNET_PREFIX}${index}`;
}

/**
 * What every node's kernel line has, however it boots; the console comes first. A node
 * booted directly also gets its name and static address (see nodeCommandLine); one booted
 * over the network gets them from DHCP.
 */
function gridCommandLine(grid: string, token: string, timescale: number): string[] {
  return [
    "console=ttyS0",
    // A panicking node reboots like a server with a watchdog, and stays visible as one.
    "panic=10",
    `flatgrid.grid=${grid}`,
    `flatgrid.token=${token}`,
    "flatgrid.debugshell=ttyS1",
    // The node's full-screen console on its third serial port (`sim console N --screen`):
    // a simulated server has no screen, so tty1 would be drawn for nobody.
    "flatgrid.console=ttyS2",
    // Each node's first disk is blank and meant to be its data partition, as an operator
    // would set it for a rack of new servers.
    "flatgrid.format=blank",
    // Software emulation runs a node tens of times slower than hardware: the grid's leases
    // and deadlines, set for real servers, must stretch with it (see node-config.ts).
    ...(timescale > 1 ? [`flatgrid.timescale=${timescale}`] : []),
  ];
}

function nodeCommandLine(grid: string[], index: number): string {
  return [
    ...grid,
    `flatgrid.hostname=node-${index}`,
    "flatgrid.net=static",
    `flatgrid.ip=${nodeAddress(index)}/24`,
  ].join(" ");
}

const BOOT_WORDS: Record<BootKind, string> = {
  kernel: "kernel boot",
  pxe: "network boot",
  iso: "from the ISO as a CD, its grid in node.conf on its data partition",
};

export function nodeMac(index: number): string {
  return `52:54:00:15:00:${index.toString(16).padStart(2, "0")}`;
}

/** An ext4 image of a catalog directory, labelled FGCATALOG (mke2fs -d keeps holes). */
function catalogDisk(catalog: string, file: string): void {
  if (!existsSync(join(catalog, "manifest.json")))
    throw new SimError(
      `${catalog} is not an appliance catalog (no manifest.json): npm run catalog`,
      "host",
    );
  let bytes = 0;
  for (const f of readdirSync(catalog)) bytes += statSync(join(catalog, f)).size;
  const mib = Math.ceil((bytes * 1.1) / 2 ** 20) + 64;
  rmSync(file, { force: true });
  const r = spawnSync(
    "mke2fs",
    ["-q", "-t", "ext4", "-L", "FGCATALOG", "-d", catalog, file, `${mib}M`],
    {
      encoding: "utf8",
    },
  );
  if (r.status !== 0)
    throw new SimError(`cannot make the catalog disk ${file}: ${r.stderr}`, "host");
}

/**
 * A node booted from the ISO takes its grid from its own data partition, as if its operator
 * had filled in the console's first-boot form: the disk comes already formatted (FLATGRID)
 * with node.conf on it. Sparse: mke2fs -d writes only what it must.
 */
function configuredDataDisk(file: string, gib: number, nodeConf: string, scratch: string): void {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { mode: 0o700 });
  writeFileSync(join(scratch, NODE_CONF), nodeConf, { mode: 0o600 });
  rmSync(file, { force: true });
  const r = spawnSync(
    "mke2fs",
    ["-q", "-t", "ext4", "-L", DATA_LABEL, "-m", "1", "-d", scratch, file, `${gib}G`],
    { encoding: "utf8" },
  );
  rmSync(scratch, { recursive: true, force: true });
  if (r.status !== 0)
    throw new SimError(`cannot make the data partition ${file}: ${r.stderr}`, "host");
}

/** node.conf for a node booted from the ISO: what the kernel line says for the others. */
function nodeConf(args: string[]): string {
  return [
    "# Written by `flatgrid sim up --boot iso`, as the first-boot form on the console would.",
    ...args.filter((a) => a.startsWith("flatgrid.")).map((a) => a.replace("=", " = ")),
    "",
  ].join("\n");
}

/** A sparse raw file: a blank disk that costs nothing until the node writes to it. */
function blankDisk(file: string, gib: number): void {
  const fd = openSync(file, "w", 0o600);
  closeSync(fd);
  const r = spawnSync("truncate", ["-s", `${gib}G`, file]);
  if (r.status !== 0) throw new SimError(`cannot create the disk ${file}`, "host");
}

/** Boots a simulated grid; returns when every node printed its ready line. */
export async function up(o: UpOptions): Promise<UpResult> {
  validate(o);
  const progress = o.progress ?? (() => {});
  const dir = resolveDir(o.dir);
  const image = imageFiles(o.image ?? process.env.FLATGRID_SIM_IMAGE ?? DEFAULT_IMAGE);
  checkQemu();
  const old = readState(dir);
  if (old) {
    if (anyAlive(old))
      throw new SimError(
        `a simulator is already up in ${dir}: ${plural(old.nodes.length, "node")} in namespace ${old.namespace} (see \`flatgrid sim status\`; \`flatgrid sim down\` stops it)`,
        "already-up",
      );
    progress(`clearing a stopped simulator left in ${dir}`);
    down({ dir, progress });
  }
  const accel = chooseAccel(o.accel ?? "auto", probeHostKvm());
  progress(`accelerator: ${accel.reason}`);
  if (accel.warning) progress(`warning: ${accel.warning}`);
  const vcpusWarning = tcgVcpusWarning(accel, o.cpus ?? 1);
  if (vcpusWarning) progress(`warning: ${vcpusWarning}`);

  const grid = o.grid ?? "sim";
  const token = o.token ?? randomBytes(18).toString("base64url");
  const boot: BootKind = (o.boot as BootKind | undefined) ?? "kernel";
  if (boot === "iso" && !existsSync(image.iso))
    throw new SimError(`no ${image.iso}: build the image with \`npm run image\``, "no-image");
  const firmware = o.firmware === "uefi" ? "uefi" : "bios";
  const state: SimState = {
    version: STATE_VERSION,
    dir,
    namespace: `${NS_PREFIX}${randomBytes(3).toString("hex")}`,
    bridgeAddress: BRIDGE_ADDRESS,
    accel,
    grid,
    tokenFile: tokenPath(dir),
    boot,
    firmware,
    netboot: null,
    createdAt: new Date().toISOString(),
    phase: "starting",
    ownerPid: process.pid,
    nodes: [],
  };
  claimDir(state);
  try {
    writeFileSync(state.tokenFile, `${token}\n`, { mode: 0o600 });
    createNetwork(state.namespace, BRIDGE_ADDRESS);
    progress(
      `network: namespace ${state.namespace}, bridge ${BRIDGE_ADDRESS}, no route out; grid "${grid}", token in ${state.tokenFile}`,
    );
    const gridArgs = gridCommandLine(grid, token, accel.accel === "tcg" ? TCG_TIMESCALE : 1);
    if (boot === "pxe") {
      state.netboot = startNetboot({
        namespace: state.namespace,
        dir,
        image,
        cmdline: gridArgs,
        hosts: Array.from({ length: o.nodes }, (_, i) => ({
          mac: nodeMac(i + 1),
          ip: nodeAddress(i + 1),
          hostname: `node-${i + 1}`,
        })),
        range: {
          first: `${SUBNET_PREFIX}${MAX_NODES + 1}`,
          last: `${SUBNET_PREFIX}${MAX_NODES + 64}`,
          netmask: "255.255.255.0",
        },
        ipv6: { address: BRIDGE_ADDRESS6, prefix: SUBNET6 },
      });
      writeState(state);
      progress(
        `network boot: dnsmasq pid ${state.netboot.pid} on ${BRIDGE_ADDRESS} gives each node its address by MAC and boot.ipxe, vmlinuz and initrd.img over TFTP, and advertises ${SUBNET6}/64 as an IPv6 router that routes nowhere (log: ${state.netboot.log})`,
      );
    }
    let catalogImage: string | null = null;
    if (o.catalog) {
      catalogImage = catalogImagePath(dir);
      catalogDisk(o.catalog, catalogImage);
      progress(`catalog: ${o.catalog} on a read-only disk (FGCATALOG) for every node`);
    }
    for (let index = 1; index <= o.nodes; index++) {
      const files = nodeFiles(dir, index);
      mkdirSync(files.dir, { recursive: true, mode: 0o700 });
      if (boot === "iso")
        configuredDataDisk(
          files.disk,
          o.diskGiB ?? 8,
          nodeConf(nodeCommandLine(gridArgs, index).split(" ")),
          join(files.dir, "seed"),
        );
      else blankDisk(files.disk, o.diskGiB ?? 8);
      const tap = `tap${index}`;
      addTap(state.namespace, tap);
      const server: QemuServer = {
        name: `node-${index}`,
        accel,
        memoryMiB: o.memoryMiB ?? 2048,
        cpus: o.cpus ?? 1,
        boot:
          boot === "pxe"
            ? { kind: "network" }
            : boot === "iso"
              ? { kind: "cdrom", iso: image.iso }
              : {
                  kind: "kernel",
                  kernel: image.kernel,
                  initrd: image.initrd,
                  cmdline: nodeCommandLine(gridArgs, index),
                },
        ...(firmware === "uefi" ? { uefi: OVMF } : {}),
        tap,
        mac: nodeMac(index),
        disks: [files.disk, ...(o.extraDisks ?? [])],
        readOnlyDisks: catalogImage ? [catalogImage] : [],
        consoleSocket: files.consoleSocket,
        consoleLog: files.consoleLog,
        shellSocket: files.shellSocket,
        shellLog: files.shellLog,
        screenSocket: files.screenSocket,
        qmpSocket: files.qmpSocket,
        pidFile: files.pidFile,
      };
      const node: SimNode = {
        index,
        name: server.name,
        address: `${nodeAddress(index)}/24`,
        pid: null,
        startedAt: new Date().toISOString(),
        consoleOffset: fileSize(files.consoleLog),
        killedAt: null,
        qemu: server,
      };
      state.nodes.push(node);
      node.pid = startQemu(state.namespace, server);
      writeState(state);
      progress(
        `${node.name}: QEMU pid ${node.pid}, ${nodeAddress(index)}, ${server.memoryMiB} MiB, ${server.cpus} vCPU${server.cpus > 1 ? "s" : ""}, ${firmware === "uefi" ? "UEFI" : "BIOS"}, ${BOOT_WORDS[boot]}`,
      );
    }
    state.phase = "up";
    writeState(state);
  } catch (err) {
    progress("start failed: removing what was started");
    down({ dir, progress: () => {} });
    throw err;
  }
  const started = Date.now();
  const ready = await waitReady(state.nodes, {
    timeoutMs: o.timeoutMs ?? 600_000,
    progress,
    accel: accel.accel,
  });
  return { state, ready, seconds: (Date.now() - started) / 1000 };
}
