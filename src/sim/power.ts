import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { fileSize } from "./console.js";
import { SimError } from "./errors.js";
import { namespaceExists } from "./netns.js";
import { qemuAlive, startQemu } from "./qemu.js";
import { type ReadyNode, waitReady } from "./ready.js";
import { findNode, loadState, type SimNode, writeState } from "./state.js";
import type { Progress } from "./text.js";

/** kill -9 of a node's QEMU: a server losing power. */
export function kill(which: string, dir?: string): SimNode {
  const state = loadState(dir);
  const node = findNode(state, which);
  if (!node.pid || !qemuAlive(node.pid, node.qemu.pidFile))
    throw new SimError(`${node.name} is not running`, "no-such-node");
  process.kill(node.pid, "SIGKILL");
  for (let i = 0; i < 100 && qemuAlive(node.pid, node.qemu.pidFile); i++)
    spawnSync("sleep", ["0.05"]);
  node.killedAt = new Date().toISOString();
  writeState(state);
  return node;
}

/** Powers a stopped node on again, with the same disk and address; waits for its ready line. */
export async function start(
  which: string,
  options: { dir?: string; timeoutMs?: number; progress?: Progress } = {},
): Promise<ReadyNode> {
  const state = loadState(options.dir);
  const node = findNode(state, which);
  if (qemuAlive(node.pid, node.qemu.pidFile))
    throw new SimError(`${node.name} is already running (pid ${node.pid})`, "already-up");
  if (!namespaceExists(state.namespace))
    throw new SimError(
      `the simulator's namespace ${state.namespace} is gone: \`flatgrid sim down\`, then up again`,
      "host",
    );
  node.consoleOffset = fileSize(node.qemu.consoleLog);
  rmSync(node.qemu.pidFile, { force: true });
  node.pid = startQemu(state.namespace, node.qemu);
  node.startedAt = new Date().toISOString();
  node.killedAt = null;
  writeState(state);
  options.progress?.(`${node.name}: QEMU pid ${node.pid}`);
  const [ready] = await waitReady([node], {
    timeoutMs: options.timeoutMs ?? 600_000,
    progress: options.progress ?? (() => {}),
    accel: state.accel.accel,
  });
  if (!ready) throw new SimError(`${node.name}: no ready line`, "not-ready");
  return ready;
}
