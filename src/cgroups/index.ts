export {
  Cgroup,
  CgroupError,
  type CgroupLimits,
  type CgroupUsage,
  CPU_PERIOD_US,
  checkGroupPath,
  detectHierarchy,
  type Hierarchy,
  removeGroupTree,
} from "./cgroup.js";
