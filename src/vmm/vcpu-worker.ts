import { parentPort, workerData } from "node:worker_threads";
import { gettid, ioctlRaw, KVM_RUN, pthreadSelf } from "../kvm/index.js";
import { CTL_RESULT, CTL_STATE, STATE_EXITED, STATE_RUNNING, STATE_STOP } from "./vcpu-control.js";

/**
 * One vCPU thread: it only runs KVM_RUN. Each exit is handed to the VMM's main thread
 * through shared memory (the kvm_run page is shared too), and the thread sleeps until the
 * main thread has handled the exit and says run again, or stop.
 */
const { fd, control } = workerData as { fd: number; control: SharedArrayBuffer };
const ctl = new Int32Array(control);

parentPort?.postMessage({ thread: pthreadSelf(), tid: gettid() });

for (;;) {
  if (Atomics.load(ctl, CTL_STATE) === STATE_STOP) break;
  const result = ioctlRaw(fd, KVM_RUN, 0);
  Atomics.store(ctl, CTL_RESULT, result);
  Atomics.store(ctl, CTL_STATE, STATE_EXITED);
  Atomics.notify(ctl, CTL_STATE);
  while (Atomics.load(ctl, CTL_STATE) === STATE_EXITED) Atomics.wait(ctl, CTL_STATE, STATE_EXITED);
  if (Atomics.load(ctl, CTL_STATE) !== STATE_RUNNING) break;
}
