/** The words a vCPU thread and the main thread share (an Int32Array over a SharedArrayBuffer). */
export const CTL_STATE = 0;
export const CTL_RESULT = 1;
/** MMIO exits the vCPU thread answered itself (virtio interrupt status and ack). */
export const CTL_FAST_MMIO = 2;
/** Port I/O exits the vCPU thread answered itself (the console's LSR and THR). */
export const CTL_FAST_PIO = 3;
export const CTL_WORDS = 4;

/** The vCPU thread owns the vCPU (in or about to enter KVM_RUN). */
export const STATE_RUNNING = 0;
/** KVM_RUN returned; the main thread owns the vCPU and handles the exit. */
export const STATE_EXITED = 1;
/** The thread leaves its loop. */
export const STATE_STOP = 2;
/** The thread is gone without being told to stop (it failed to start, or threw). */
export const STATE_GONE = 3;
