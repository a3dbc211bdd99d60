export {
  ControlClient,
  ControlError,
  DEFAULT_GRID_SOCKET,
  DEFAULT_SOCKET,
  gridSocketPath,
  parseReply,
  replyError,
  socketPath,
} from "./control-client.js";
export { listenPrivateSocket, SocketInUseError } from "./control-server.js";
export {
  blockDevices,
  type DataPartitionStatus,
  type DiskVerdict,
  formatBytes,
  plan as planDataPartition,
  setUpDataPartition,
} from "./data-partition.js";
export { runDemo } from "./demo.js";
export {
  DATA_LABEL,
  describe as describeSignature,
  identify,
  type Signature,
} from "./disk-signature.js";
export { type Inventory, parseMeminfo, readInventory } from "./inventory.js";
export { LEVELS, type LogEntry } from "./log-buffer.js";
export { networkChanges, reapplyNetwork } from "./network.js";
export { DEFAULT_CONFIG, formatConfigError, type NodeConfig } from "./node-config.js";
export { readNodeConfig } from "./read-config.js";
export type { ServiceState, ServiceStatus } from "./service.js";
export type { ServiceSpec, ServiceSpecInput } from "./service-spec.js";
export { type BootMode, consoleTerm } from "./system.js";
export { VERSION } from "./version.js";
export { writeFileAtomic } from "./write-file-atomic.js";
