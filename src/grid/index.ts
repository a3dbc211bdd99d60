export type {
  AppStatus,
  AppSummary,
  InstanceStatus,
} from "./app-api.js";
export { AppStoreError, readAppState } from "./app-store.js";
export { DeposedError, Election } from "./election.js";
export {
  decide,
  FORMATION_WINDOW_MS,
  type FormationDecision,
  type FormationPeer,
  targetVoters,
} from "./formation.js";
export {
  GridNode,
  type GridNodeOptions,
  type GridStatus,
  NODE_RESERVE_MIB,
  nodeCapacity,
  type Phase,
} from "./grid-node.js";
export { checkProof, JoinError, prove } from "./join.js";
export { type Assignment, type GridInfo, keys, type NodeRecord, PORTS } from "./layout.js";
export { NodeState } from "./node-state.js";
export {
  certifiedNodeId,
  createCa,
  createNodeRequest,
  fingerprint,
  PkiError,
  signNodeRequest,
} from "./pki.js";
export { callGrid, DEFAULT_GRID_SOCKET, gridSocketPath, streamGrid } from "./status-socket.js";
