/**
 * The grid simulator: whole grids of QEMU servers booted from the node image, on a bridge
 * in a private network namespace. A host tool for operators and the e2e tests; it never
 * runs on a node.
 */
export {
  type AccelChoice,
  type AccelRequest,
  chooseAccel,
  type HostKvm,
  probeHostKvm,
  tcgVcpusWarning,
} from "./accel.js";
export { attachConsole, bootStep, lastLines, READY_LINE, readLog } from "./console.js";
export { anyAlive, type DownResult, down } from "./down.js";
export { SimError, type SimErrorCode } from "./errors.js";
export { type LanResponse, lanGet } from "./lan.js";
export { killProcessesIn, NS_PREFIX, namespaceExists, pidsInNamespace } from "./netns.js";
export {
  instancesLine,
  jsonLine,
  type NodeCommandOptions,
  onNode,
  type WatchAppOptions,
  watchApp,
} from "./node-commands.js";
export { bootUntil, type OneShot, type OneShotResult } from "./one-shot.js";
export { kill, start } from "./power.js";
export { QEMU, type QemuServer, qemuAlive, qemuArgs } from "./qemu.js";
export {
  lapicSummary,
  qmp,
  vcpuLines,
  vcpuSummary,
  WEDGED,
} from "./qmp.js";
export type { ReadyNode } from "./ready.js";
export { NodeShell } from "./shell.js";
export {
  DEFAULT_DIR,
  findNode,
  loadState,
  readState,
  resolveDir,
  type SimNode,
  type SimState,
} from "./state.js";
export { type NodeStatus, nodeGridStatus, type SimStatus, status } from "./status.js";
export { type Progress, plural } from "./text.js";
export {
  BRIDGE_ADDRESS,
  DEFAULT_IMAGE,
  nodeAddress,
  type UpOptions,
  type UpResult,
  up,
} from "./up.js";
export {
  nudgeConsole,
  type UnwedgeResult,
  unwedge,
  type WedgeSockets,
  wedgedVcpus,
} from "./wedge.js";
