import { writeFileSync } from "node:fs";

/** What the kernel keeps of a thread's name (TASK_COMM_LEN, less its NUL). */
const COMM_MAX = 15;

/**
 * Names the calling thread where top -H, ps -L and /proc show it. Node's workers are all
 * "node" there otherwise, and a monitor whose threads look alike cannot be told apart when
 * one of them spins. Best effort: a name is for people, never for the monitor itself.
 */
export function nameThisThread(name: string): void {
  try {
    writeFileSync("/proc/thread-self/comm", name.slice(0, COMM_MAX));
  } catch {
    // No /proc (a chroot without it): the thread runs under the name it had.
  }
}
