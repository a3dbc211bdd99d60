import type { ResourceLimits } from "node:worker_threads";

/**
 * The VMM's threads (vCPUs, the disks' queue thread) allocate little and keep less: a young
 * generation of a few MiB is plenty, where V8 would let a busy thread's semi-spaces grow to
 * 16 MiB each. The bench did not show this alone closing the gap it was aimed at: the
 * monitor is still at 78-87 MiB after the disk tests against 72 MiB at boot.
 */
export const SMALL_YOUNG_GENERATION: ResourceLimits = { maxYoungGenerationSizeMb: 4 };
