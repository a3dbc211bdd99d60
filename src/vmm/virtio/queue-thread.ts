import { Worker } from "node:worker_threads";
import { close, EFD_NONBLOCK, eventfd, signalEventfd } from "../../kvm/index.js";
import type { BlockRequestsSpec } from "../devices/virtio-blk-requests.js";
import type { RegionLayout } from "../guest-memory.js";
import { SMALL_YOUNG_GENERATION } from "../worker-limits.js";
import type { Virtqueue } from "./queue.js";

/**
 * The queues of a VM's disks, served on one thread of their own (a "dataplane", as QEMU calls
 * its iothreads): the thread sleeps in poll(2) on the queues' ioeventfds, serves what the
 * drivers made available, and raises each device's interrupt line itself (IrqEdge) after
 * setting its bit in the shared interrupt-status table. A request crosses one thread boundary
 * (the vCPU's notify wakes this thread) instead of three (poll on a libuv thread, the main
 * thread's event loop, poll again): measured on the simulator's nested KVM, twice the 4 KiB
 * IOPS. One thread for all the disks, because each Node.js thread is a V8 isolate of its own
 * (about 13 MiB resident).
 *
 * Registers, activation and reset stay on the main thread, with the transports; they reach
 * the thread through shared words, because a thread asleep in poll(2) reads no messages.
 * What keeps a reset safe: the thread sets BUSY before it looks at a device's state and
 * touches its queues, and the main thread, after it marks the device inactive, waits until
 * the thread is not BUSY. Both with sequentially consistent atomics, so either the thread
 * sees the device inactive or the main thread sees it busy and waits: after deactivate()
 * returns, the thread no longer touches that device's queues until the next activation.
 */

/** What a queue thread serves; one kind of device so far. */
export type QueueThreadSpec = BlockRequestsSpec;

/** The control words (an Int32Array over a SharedArrayBuffer): BUSY, EXIT, then per device. */
export const CONTROL_BUSY = 0;
/** 1 once the VM ends: the thread leaves. */
export const CONTROL_EXIT = 1;
const HEADER_WORDS = 2;
/**
 * A device's words, from its base: state, generation, indirect, event index, queue count,
 * queues.
 */
export const DEVICE_STATE = 0;
/** Bumped at every activation: the thread reloads the device's queues when it changes. */
export const DEVICE_GENERATION = 1;
export const DEVICE_INDIRECT = 2;
export const DEVICE_EVENT_IDX = 3;
export const DEVICE_QUEUES = 4;
export const DEVICE_QUEUE_BASE = 5;
/** Per queue: ready, size, and the three ring addresses in 32-bit halves. */
export const QUEUE_WORDS = 8;

export const STATE_INACTIVE = 0;
export const STATE_ACTIVE = 1;

export interface ThreadDevice {
  spec: QueueThreadSpec;
  /** The queues' ioeventfds, by queue index. */
  kicks: number[];
  /** The device's interrupt line (GSI). */
  irq: number;
  /** Its cell in the interrupt-status table. */
  interruptCell: number;
  /** Where its words start in the control array. */
  base: number;
}

export interface QueueThreadData {
  devices: ThreadDevice[];
  memory: RegionLayout[];
  memorySize: number;
  /** The VM's fd, for KVM_IRQ_LINE. */
  vmFd: number;
  control: SharedArrayBuffer;
  /** Written by the main thread to wake the thread out of poll(2) (a new state). */
  wake: number;
  interrupts: SharedArrayBuffer;
}

/** What the thread tells the main thread: a guest's malformed queue, or its own failure. */
export type QueueThreadMessage =
  | { device: number; queueError: string; generation: number }
  | { fatal: string };

/** A device as its transport and the VM give it to the thread. */
export interface QueueThreadDeviceOptions {
  name: string;
  spec: QueueThreadSpec;
  kicks: number[];
  /** Its interrupt line (GSI). */
  irq: number;
  interruptCell: number;
  /** A malformed queue: the device needs a reset (the transport's queueFailed()). */
  onQueueError: (message: string) => void;
}

export class QueueThread {
  private readonly control: Int32Array<SharedArrayBuffer>;
  private readonly worker: Worker;
  private readonly wake: number;
  private stopping = false;
  private gone = false;
  /** One handle per device, in the order given. */
  readonly devices: QueueThreadDevice[] = [];
  /** Resolves when the thread is gone. */
  readonly exited: Promise<void>;

  constructor(
    devices: readonly QueueThreadDeviceOptions[],
    memory: { layout: RegionLayout[]; size: number },
    /** The VM's fd: the thread raises the devices' interrupt lines on it. */
    vmFd: number,
    interrupts: SharedArrayBuffer,
    /** The thread itself failed: a bug of ours, not the guest's. */
    onFatal: (message: string) => void,
  ) {
    let words = HEADER_WORDS;
    const placed: ThreadDevice[] = devices.map((d) => {
      const base = words;
      words += DEVICE_QUEUE_BASE + QUEUE_WORDS * d.kicks.length;
      return { spec: d.spec, kicks: d.kicks, irq: d.irq, interruptCell: d.interruptCell, base };
    });
    this.control = new Int32Array(new SharedArrayBuffer(4 * words));
    this.wake = eventfd(EFD_NONBLOCK, "eventfd to wake the disks' queue thread");
    for (const p of placed) this.devices.push(new QueueThreadDevice(this, p.base));
    const workerData: QueueThreadData = {
      devices: placed,
      memory: memory.layout,
      memorySize: memory.size,
      vmFd,
      control: this.control.buffer,
      wake: this.wake,
      interrupts,
    };
    this.worker = new Worker(new URL("./queue-thread-worker.js", import.meta.url), {
      workerData,
      name: "disk queues",
      resourceLimits: SMALL_YOUNG_GENERATION,
    });
    this.worker.on("message", (m: QueueThreadMessage) => {
      if ("fatal" in m) {
        onFatal(`the disks' queue thread: ${m.fatal}`);
        return;
      }
      const device = this.devices[m.device];
      if (device?.current(m.generation)) devices[m.device]?.onQueueError(m.queueError);
    });
    this.worker.on("error", (err) => onFatal(`the disks' queue thread: ${err.message}`));
    // A VM that is made but never started nor stopped does not keep the process alive.
    this.worker.unref();
    this.exited = new Promise((resolve) => {
      this.worker.once("exit", (code) => {
        // The wake fd stays open until now: a number closed under a thread asleep in poll(2)
        // could be reused for another file and polled instead.
        this.gone = true;
        close(this.wake);
        if (!this.stopping) onFatal(`the disks' queue thread ended (exit code ${code})`);
        resolve();
      });
    });
  }

  /** @internal Sets a state and waits until the thread is outside its serving section. */
  setState(at: number, state: number): void {
    if (this.stopping) return;
    Atomics.store(this.control, at, state);
    this.poke();
    // The thread clears BUSY in a finally: it cannot leave it set, even when it throws.
    while (Atomics.load(this.control, CONTROL_BUSY) === 1)
      Atomics.wait(this.control, CONTROL_BUSY, 1, 100);
  }

  /** @internal */
  get words(): Int32Array<SharedArrayBuffer> {
    return this.control;
  }

  /** @internal */
  poke(): void {
    if (!this.stopping && !this.gone) signalEventfd(this.wake);
  }

  /**
   * The VM ends: when this returns the thread no longer touches guest memory (which may be
   * unmapped now) nor the disks' files; it leaves its loop soon after (exited).
   */
  stop(): Promise<void> {
    if (!this.stopping) this.setState(CONTROL_EXIT, 1);
    this.stopping = true;
    return this.exited;
  }
}

/** One device's side of the queue thread, for its VirtioDevice. */
export class QueueThreadDevice {
  constructor(
    private readonly thread: QueueThread,
    private readonly base: number,
  ) {}

  /** The driver set DRIVER_OK: the thread serves these queues from now on. */
  activate(queues: readonly Virtqueue[], indirect: boolean): void {
    this.deactivate();
    const c = this.thread.words;
    const at = (k: number) => this.base + k;
    Atomics.store(c, at(DEVICE_INDIRECT), indirect ? 1 : 0);
    // The transport set it on every live queue from the negotiated features.
    Atomics.store(c, at(DEVICE_EVENT_IDX), queues.some((q) => q.eventIdx) ? 1 : 0);
    Atomics.store(c, at(DEVICE_QUEUES), queues.length);
    queues.forEach((q, i) => {
      const values = [
        q.ready ? 1 : 0,
        q.size,
        ...halves(q.descTable),
        ...halves(q.availRing),
        ...halves(q.usedRing),
      ];
      values.forEach((v, k) => {
        Atomics.store(c, at(DEVICE_QUEUE_BASE + QUEUE_WORDS * i + k), v);
      });
    });
    Atomics.add(c, at(DEVICE_GENERATION), 1);
    Atomics.store(c, at(DEVICE_STATE), STATE_ACTIVE);
    this.thread.poke();
  }

  /** Reset (or a broken queue): returns once the thread no longer touches the queues. */
  deactivate(): void {
    if (Atomics.load(this.thread.words, this.base + DEVICE_STATE) === STATE_ACTIVE)
      this.thread.setState(this.base + DEVICE_STATE, STATE_INACTIVE);
  }

  /** A notification that came as an MMIO write rather than through the ioeventfd. */
  kick(): void {
    this.thread.poke();
  }

  /** Whether a message of this activation still concerns the device. */
  current(generation: number): boolean {
    const c = this.thread.words;
    return (
      Atomics.load(c, this.base + DEVICE_GENERATION) === generation &&
      Atomics.load(c, this.base + DEVICE_STATE) === STATE_ACTIVE
    );
  }
}

function halves(value: number): [number, number] {
  return [(value % 2 ** 32) | 0, Math.floor(value / 2 ** 32) | 0];
}
