export { type HaStatus, haStatus } from "./ha.js";
export { MAX_FAILURES, onInstanceFailure, type RestartDecision } from "./instance-restarts.js";
export {
  type Decision,
  type Demand,
  type NodeCapacity,
  type Placed,
  type PlacementInput,
  place,
} from "./scheduler.js";
