import type { GridStatus } from "../grid/index.js";
import type { AccelChoice } from "./accel.js";
import { bootStep, READY_LINE, readLog } from "./console.js";
import { netbootAlive } from "./netboot.js";
import { namespaceExists } from "./netns.js";
import { jsonLine, onNode } from "./node-commands.js";
import { qemuAlive } from "./qemu.js";
import { qmp } from "./qmp.js";
import { loadState, type SimNode } from "./state.js";

export interface NodeStatus {
  index: number;
  name: string;
  address: string;
  pid: number | null;
  running: boolean;
  /** QEMU's own run state over QMP (running, paused...), null when it did not answer. */
  vm: string | null;
  killedAt: string | null;
  startedAt: string;
  /** The furthest boot step on the console since QEMU started. */
  boot: string | null;
  /** The supervisor's ready line, once printed. */
  ready: string | null;
  /** `flatgrid grid status --json` on the node, through its debug shell. */
  grid: GridStatus | null;
  gridError: string | null;
}

export interface SimStatus {
  dir: string;
  namespace: string;
  namespaceExists: boolean;
  bridgeAddress: string;
  accel: AccelChoice;
  grid: string;
  tokenFile: string;
  createdAt: string;
  boot: "kernel" | "pxe" | "iso";
  firmware: "bios" | "uefi";
  /** The DHCP and TFTP server of a network-booted simulator. */
  netboot: { pid: number; running: boolean; log: string } | null;
  nodes: NodeStatus[];
}

/** Asks a node's grid service through its debug shell. */
export async function nodeGridStatus(
  node: SimNode,
  timeoutMs = 60_000,
): Promise<{ grid: GridStatus | null; error: string | null }> {
  let output: string;
  try {
    output = await onNode(node, "flatgrid grid status --json", { timeoutMs, settleMs: 300 });
  } catch (err) {
    const why = err instanceof Error ? err.message.split("\n")[0] : String(err);
    return {
      grid: null,
      error: `no answer from the debug shell (${why}); is someone attached to it?`,
    };
  }
  const parsed = jsonLine<GridStatus | { error: { message: string } }>(output);
  if (!parsed) return { grid: null, error: `no JSON from flatgrid grid status: ${output.trim()}` };
  if ("error" in parsed) return { grid: null, error: parsed.error.message };
  return { grid: parsed, error: null };
}

export async function status(
  options: { dir?: string; grid?: boolean; gridTimeoutMs?: number } = {},
): Promise<SimStatus> {
  const state = loadState(options.dir);
  const nodes = await Promise.all(
    state.nodes.map(async (n): Promise<NodeStatus> => {
      const running = qemuAlive(n.pid, n.qemu.pidFile);
      const text = running ? readLog(n.qemu.consoleLog, n.consoleOffset) : "";
      const ready = READY_LINE.exec(text)?.[0] ?? null;
      let vm: string | null = null;
      if (running) {
        vm = await qmp<{ status: string }>(n.qemu.qmpSocket, "query-status")
          .then((r) => r.status)
          .catch(() => null);
      }
      const grid =
        options.grid !== false && running && ready && vm === "running"
          ? await nodeGridStatus(n, options.gridTimeoutMs)
          : { grid: null, error: null };
      return {
        index: n.index,
        name: n.name,
        address: n.address,
        pid: running ? n.pid : null,
        running,
        vm,
        killedAt: n.killedAt,
        startedAt: n.startedAt,
        boot: running ? bootStep(text) : null,
        ready,
        grid: grid.grid,
        gridError: grid.error,
      };
    }),
  );
  return {
    dir: state.dir,
    namespace: state.namespace,
    namespaceExists: namespaceExists(state.namespace),
    bridgeAddress: state.bridgeAddress,
    accel: state.accel,
    grid: state.grid,
    tokenFile: state.tokenFile,
    createdAt: state.createdAt,
    boot: state.boot,
    firmware: state.firmware,
    netboot: state.netboot
      ? { pid: state.netboot.pid, running: netbootAlive(state.netboot), log: state.netboot.log }
      : null,
    nodes,
  };
}
