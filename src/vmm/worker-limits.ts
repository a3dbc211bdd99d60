import type { ResourceLimits } from "node:worker_threads";

/**
 * The VMM's threads (vCPUs, the disks' queue thread) allocate little and keep less: a young
 * generation of a few MiB is plenty. Left to V8, a busy thread grows its semi-spaces to
 * 16 MiB each, and that stays resident: the monitor measured 85-87 MiB after the disk
 * benchmark, against 72 MiB at boot.
 */
export const SMALL_YOUNG_GENERATION: ResourceLimits = { maxYoungGenerationSizeMb: 4 };
