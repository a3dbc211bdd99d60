import { parentPort, workerData } from "node:worker_threads";
import {
  gettid,
  ioctlRaw,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_RUN,
  layouts,
  pthreadSelf,
  setThreadNice,
  signalEventfd,
  viewAt,
} from "../kvm/index.js";
import { SerialShared } from "./devices/serial-shared.js";
import { nameThisThread } from "./thread-name.js";
import {
  CTL_FAST_MMIO,
  CTL_FAST_PIO,
  CTL_RESULT,
  CTL_STATE,
  STATE_EXITED,
  STATE_RUNNING,
  STATE_STOP,
} from "./vcpu-control.js";
import { answerInterruptAccess } from "./virtio/interrupt-status.js";

/**
 * One vCPU thread: it runs KVM_RUN. Each exit is handed to the VMM's main thread through
 * shared memory (the kvm_run page is shared too), and the thread sleeps until the main thread
 * has handled the exit and says run again, or stop. The exceptions, answered here from shared
 * memory: a virtio device's INTERRUPT_STATUS read and INTERRUPT_ACK write, which the guest
 * does on every virtio interrupt (see virtio/interrupt-status.ts), and the console UART's
 * LSR read and THR write, two for every byte the guest prints (see devices/serial-shared.ts).
 */
const {
  id: vcpuId,
  fd,
  control,
  serial,
  runAddress,
  runSize,
  interrupts,
} = workerData as {
  id: number;
  fd: number;
  control: SharedArrayBuffer;
  serial: { buffer: SharedArrayBuffer; port: number; kick: number };
  runAddress: bigint;
  runSize: number;
  interrupts: SharedArrayBuffer;
};
const ctl = new Int32Array(control);
const table = new Int32Array(interrupts);
// The main thread's mapping of kvm_run, which it unmaps only once this thread is gone.
const run = Buffer.from(viewAt(runAddress, runSize));
const at = (field: keyof typeof layouts.kvm_run.fields) => layouts.kvm_run.fields[field][0];
const EXIT_REASON = at("exit_reason");
const MMIO_ADDRESS = at("mmio.phys_addr");
const MMIO_DATA = at("mmio.data");
const MMIO_LEN = at("mmio.len");
const MMIO_IS_WRITE = at("mmio.is_write");
const IO_DIRECTION = at("io.direction");
const IO_SIZE = at("io.size");
const IO_PORT = at("io.port");
const IO_COUNT = at("io.count");
const IO_DATA_OFFSET = at("io.data_offset");
const uart = new SerialShared(serial.buffer);
const signalUart = () => {
  signalEventfd(serial.kick);
};

/** One byte in or out of the UART's registers: LSR and THR are answered here. */
function answeredPortIo(): boolean {
  const offset = run.readUInt16LE(IO_PORT) - serial.port;
  if (offset < 0 || offset >= 8 || run[IO_SIZE] !== 1 || run.readUInt32LE(IO_COUNT) !== 1)
    return false;
  // KVM chose the offset, within the kvm_run mapping; the main thread checks it the same way.
  const dataAt = run.readUInt32LE(IO_DATA_OFFSET);
  if (run.readUInt32LE(IO_DATA_OFFSET + 4) !== 0 || dataAt >= run.length) return false;
  const isWrite = run[IO_DIRECTION] === KVM_EXIT_IO_OUT;
  const answer = uart.answer(offset, isWrite, isWrite ? (run[dataAt] ?? 0) : 0, signalUart);
  if (answer < 0) return false;
  if (!isWrite) run[dataAt] = answer;
  return true;
}

function answeredHere(): boolean {
  const reason = run.readUInt32LE(EXIT_REASON);
  if (reason === KVM_EXIT_IO) return answeredPortIo();
  if (reason !== KVM_EXIT_MMIO) return false;
  // Two 32-bit halves: a BigInt would be garbage on every exit.
  if (run.readUInt32LE(MMIO_ADDRESS + 4) !== 0 || run.readUInt32LE(MMIO_LEN) !== 4) return false;
  const isWrite = run[MMIO_IS_WRITE] !== 0;
  const answer = answerInterruptAccess(
    table,
    run.readUInt32LE(MMIO_ADDRESS),
    isWrite,
    isWrite ? run.readUInt32LE(MMIO_DATA) : 0,
  );
  if (answer < 0) return false;
  if (!isWrite) run.writeUInt32LE(answer, MMIO_DATA);
  return true;
}

/**
 * The vCPU threads run at a lower priority than the monitor's other threads. A guest that
 * kicks a device (its disk's queue thread, say) then waits for it; where the vCPU and the
 * device's thread share a CPU, at equal priority the vCPU went on until its time slice ended
 * or the guest halted, and the device's work waited behind it. Measured on the simulator's
 * one-CPU nodes: sequential disk reads 77 MB/s at equal priority, 104 MB/s at nice 5 (QEMU
 * microvm: 115). Lower, not higher: raising a thread above the node's services needs
 * privilege and could starve them; a VM's share of the node against other VMs and services
 * is its control group's weight, which a thread's nice value does not change.
 */
const VCPU_NICE = 5;

nameThisThread(`fg-vcpu${vcpuId}`);
try {
  setThreadNice(gettid(), VCPU_NICE);
} catch {
  // Lowering one's own priority does not fail on Linux; were it to, the vCPU runs as before.
}
// After the nice value: whoever learns the thread id finds the thread as it will run.
parentPort?.postMessage({ thread: pthreadSelf(), tid: gettid() });

for (;;) {
  if (Atomics.load(ctl, CTL_STATE) === STATE_STOP) break;
  const result = ioctlRaw(fd, KVM_RUN, 0);
  if (result === 0 && answeredHere()) {
    Atomics.add(
      ctl,
      run.readUInt32LE(EXIT_REASON) === KVM_EXIT_IO ? CTL_FAST_PIO : CTL_FAST_MMIO,
      1,
    );
    continue;
  }
  Atomics.store(ctl, CTL_RESULT, result);
  // STOP set while the vCPU ran (the process exits: Vm.abandon()) ends the thread here.
  if (Atomics.compareExchange(ctl, CTL_STATE, STATE_RUNNING, STATE_EXITED) !== STATE_RUNNING) break;
  Atomics.notify(ctl, CTL_STATE);
  while (Atomics.load(ctl, CTL_STATE) === STATE_EXITED) Atomics.wait(ctl, CTL_STATE, STATE_EXITED);
  if (Atomics.load(ctl, CTL_STATE) !== STATE_RUNNING) break;
}
