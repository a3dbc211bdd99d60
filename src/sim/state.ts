import { closeSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import type { AccelChoice } from "./accel.js";
import { SimError } from "./errors.js";
import type { NetbootServer } from "./netboot.js";
import type { QemuServer } from "./qemu.js";

/**
 * The state directory records what a simulator runs, so that later commands (status,
 * console, kill, down) find it: sim.json, the grid's join token, and per node its disk,
 * console log, sockets and QEMU's pid file. One simulator per directory.
 */

export const DEFAULT_DIR = "/run/flatgrid-sim";
export const STATE_VERSION = 2;

export interface SimNode {
  /** 1-based; node-N. */
  index: number;
  name: string;
  /** Address with prefix, as given on the kernel command line. */
  address: string;
  pid: number | null;
  startedAt: string;
  /** Size of the console log when this run of QEMU started: its output comes after. */
  consoleOffset: number;
  /** Set by `sim kill`, cleared by `sim start`. */
  killedAt: string | null;
  qemu: QemuServer;
}

export interface SimState {
  version: typeof STATE_VERSION;
  dir: string;
  namespace: string;
  bridgeAddress: string;
  accel: AccelChoice;
  grid: string;
  tokenFile: string;
  /** How the nodes boot: kernel (QEMU loads it), pxe (from `netboot`) or iso (a CD). */
  boot: "kernel" | "pxe" | "iso";
  firmware: "bios" | "uefi";
  /** The DHCP and TFTP server of a --boot pxe simulator; null otherwise. */
  netboot: NetbootServer | null;
  createdAt: string;
  /** "starting" until every QEMU runs; a crash of `up` before that leaves it for `down`. */
  phase: "starting" | "up";
  /** The `up` that is starting it: while it lives, a second `up` must not clear its work. */
  ownerPid: number;
  nodes: SimNode[];
}

export function resolveDir(dir?: string): string {
  return dir ?? process.env.FLATGRID_SIM_DIR ?? DEFAULT_DIR;
}

export const statePath = (dir: string) => join(dir, "sim.json");
export const tokenPath = (dir: string) => join(dir, "token");
/** The catalog disk every node shares (sim up --catalog). */
export const catalogImagePath = (dir: string) => join(dir, "catalog.img");

export function nodeFiles(dir: string, index: number) {
  const d = join(dir, `node-${index}`);
  const files = {
    dir: d,
    disk: join(d, "disk.raw"),
    consoleSocket: join(d, "console.sock"),
    consoleLog: join(d, "console.log"),
    shellSocket: join(d, "shell.sock"),
    shellLog: join(d, "shell.log"),
    screenSocket: join(d, "screen.sock"),
    qmpSocket: join(d, "qmp.sock"),
    pidFile: join(d, "qemu.pid"),
  };
  // sun_path holds 107 bytes and a NUL; QEMU's own error for a longer one is obscure.
  if (Buffer.byteLength(files.consoleSocket) > 107)
    throw new SimError(
      `the state directory ${dir} is too long a path for unix sockets`,
      "bad-option",
    );
  return files;
}

export function readState(dir: string): SimState | null {
  let text: string;
  try {
    text = readFileSync(statePath(dir), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  const state = JSON.parse(text) as SimState;
  if (state.version !== STATE_VERSION)
    throw new SimError(
      `${statePath(dir)} is from another version of flatgrid (${String(state.version)}); remove the simulator by hand: ip netns del ${state.namespace}`,
      "host",
    );
  return state;
}

/** Written whole and renamed into place, so a reader never sees half a file. */
export function writeState(state: SimState): void {
  const tmp = `${statePath(state.dir)}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, statePath(state.dir));
}

/**
 * Claims the directory for a new simulator: sim.json is created exclusively, so two `up`s
 * in one directory cannot both proceed.
 */
export function claimDir(state: SimState): void {
  mkdirSync(state.dir, { recursive: true, mode: 0o700 });
  let fd: number;
  try {
    fd = openSync(statePath(state.dir), "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST")
      throw new SimError(`a simulator is already recorded in ${state.dir}`, "already-up");
    throw err;
  }
  closeSync(fd);
  writeState(state);
}

export function loadState(dir?: string): SimState {
  const d = resolveDir(dir);
  const state = readState(d);
  if (!state)
    throw new SimError(`no simulator is up in ${d} (start one with \`flatgrid sim up\`)`, "not-up");
  return state;
}

/** NODE as 2 or node-2. */
export function findNode(state: SimState, which: string): SimNode {
  const m = /^(?:node-)?(\d+)$/.exec(which);
  const node = m ? state.nodes.find((n) => n.index === Number(m[1])) : undefined;
  if (!node)
    throw new SimError(
      `no node ${which} in this simulator (nodes: ${state.nodes.map((n) => n.index).join(", ")})`,
      "no-such-node",
    );
  return node;
}
