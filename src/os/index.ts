export { ControlClient, ControlError, DEFAULT_SOCKET, socketPath } from "./control-client.js";
export { runDemo } from "./demo.js";
export { LEVELS, type LogEntry } from "./log-buffer.js";
export type { NodeConfig } from "./node-config.js";
export type { ServiceState, ServiceStatus } from "./service.js";
export type { ServiceSpec, ServiceSpecInput } from "./service-spec.js";
export type { BootMode } from "./system.js";
export { VERSION } from "./version.js";
