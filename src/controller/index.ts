export {
  type AppRecord,
  demandOf,
  type PlacementRecord,
  type ReconcileInput,
  type ReconcilePlan,
  reconcileApps,
  type ScheduleRecord,
} from "./app-reconcile.js";
export { type HaStatus, haStatus, quorum } from "./ha.js";
export { MAX_FAILURES, onInstanceFailure, type RestartDecision } from "./instance-restarts.js";
export {
  type Decision,
  type Demand,
  type NodeCapacity,
  type Placed,
  type PlacementInput,
  place,
} from "./scheduler.js";
