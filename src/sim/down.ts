import { spawnSync } from "node:child_process";
import { existsSync, rmdirSync, rmSync } from "node:fs";
import { netbootFiles } from "./netboot.js";
import { removeNetwork } from "./netns.js";
import { qemuAlive } from "./qemu.js";
import {
  catalogImagePath,
  nodeFiles,
  readState,
  resolveDir,
  type SimState,
  statePath,
  tokenPath,
} from "./state.js";
import type { Progress } from "./text.js";

/** Whether anything recorded in the state still runs. */
export function anyAlive(state: SimState): boolean {
  if (state.nodes.some((n) => qemuAlive(n.pid, n.qemu.pidFile))) return true;
  return state.phase === "starting" && existsSync(`/proc/${state.ownerPid}`);
}

export interface DownResult {
  dir: string;
  namespace: string | null;
  killed: { node: string; pid: number }[];
}

/** Stops every QEMU, removes the namespace and the state. Nothing up is not an error. */
export function down(options: { dir?: string; progress?: Progress } = {}): DownResult {
  const dir = resolveDir(options.dir);
  const progress = options.progress ?? (() => {});
  const state = readState(dir);
  const result: DownResult = { dir, namespace: state?.namespace ?? null, killed: [] };
  if (!state) return result;
  for (const node of state.nodes) {
    if (node.pid && qemuAlive(node.pid, node.qemu.pidFile)) {
      process.kill(node.pid, "SIGKILL");
      result.killed.push({ node: node.name, pid: node.pid });
    }
  }
  // Until the reaper has collected them, killed QEMUs still show in ps (as zombies).
  for (let i = 0; i < 100 && result.killed.some((k) => existsSync(`/proc/${k.pid}`)); i++)
    spawnSync("sleep", ["0.05"]);
  if (result.killed.length)
    progress(`stopped ${result.killed.map((k) => `${k.node} (pid ${k.pid})`).join(", ")}`);
  // Whatever else runs in the namespace goes with it.
  removeNetwork(state.namespace);
  progress(`removed namespace ${state.namespace}`);
  for (const node of state.nodes)
    rmSync(nodeFiles(dir, node.index).dir, { recursive: true, force: true });
  rmSync(tokenPath(dir), { force: true });
  rmSync(`${statePath(dir)}.tmp`, { force: true });
  rmSync(statePath(dir), { force: true });
  rmSync(catalogImagePath(dir), { force: true });
  for (const file of netbootFiles(dir)) rmSync(file, { recursive: true, force: true });
  try {
    rmdirSync(dir);
    progress(`removed ${dir}`);
  } catch {
    // Not empty: someone else's files, which are not ours to remove.
    progress(`left ${dir}: it holds files that are not the simulator's`);
  }
  return result;
}
