export {
  Agent,
  AgentError,
  type AgentOptions,
  DEFAULT_BOOT_DEADLINE_MS,
  type DesiredInstance,
  type InstanceMetrics,
  type InstanceState,
  type ObservedInstance,
  VM_CPU_WEIGHT,
} from "./agent.js";
export { ClassImageError, ClassImages, type ImagePeers } from "./class-images.js";
export {
  APP_NET_PREFIX,
  APP_NETS,
  appSubnet,
  type ClassParts,
  type InstancePlan,
  InstancePlanError,
  instanceAddress,
  instanceMac,
  planInstance,
} from "./instance-plan.js";
export { CONSOLE_LOG_MAX, type ConsoleChunk, readConsole, rotateConsole } from "./vm-process.js";
export { ensureVolume, VolumeError } from "./volumes.js";
