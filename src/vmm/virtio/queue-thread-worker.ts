import { parentPort, workerData } from "node:worker_threads";
import {
  IrqEdge,
  poll,
  polled,
  pollInputSet,
  readRaw,
  SyscallError,
  VIRTIO_MMIO_INT_VRING,
} from "../../kvm/index.js";
import { BlockRequests } from "../devices/virtio-blk-requests.js";
import { GuestMemory } from "../guest-memory.js";
import { nameThisThread } from "../thread-name.js";
import { InterruptStatus } from "./interrupt-status.js";
import { type Chain, QueueError, serveAvailable, Virtqueue } from "./queue.js";
import {
  CONTROL_BUSY,
  CONTROL_EXIT,
  DEVICE_EVENT_IDX,
  DEVICE_GENERATION,
  DEVICE_INDIRECT,
  DEVICE_QUEUE_BASE,
  DEVICE_QUEUES,
  DEVICE_STATE,
  QUEUE_WORDS,
  type QueueThreadData,
  type QueueThreadMessage,
  STATE_ACTIVE,
  type ThreadDevice,
} from "./queue-thread.js";

/**
 * The disks' queue thread (see queue-thread.ts): asleep in poll(2) on the wake eventfd and
 * the queues' ioeventfds; awake, it serves the queues the drivers notified and raises their
 * interrupts. Blocking here is the point: this thread has no event loop to keep free.
 */
const data = workerData as QueueThreadData;
nameThisThread("fg-disk-queues");
const control = new Int32Array(data.control);
const memory = new GuestMemory(data.memorySize, { existing: data.memory });
const interrupts = new Int32Array(data.interrupts);
const scratch = Buffer.alloc(8);

/** One device as the thread sees it; its queues are reloaded at each activation. */
class Served {
  readonly interrupt: InterruptStatus;
  private readonly edge: IrqEdge;
  readonly serve: (chain: Chain) => number;
  readonly notified: boolean[];
  generation = -1;
  queues: Virtqueue[] = [];
  indirect = false;
  /** A malformed queue stops this activation until the next one (after the driver's reset). */
  broken = false;

  constructor(
    readonly index: number,
    readonly device: ThreadDevice,
  ) {
    this.interrupt = new InterruptStatus(interrupts, device.interruptCell);
    this.edge = new IrqEdge(data.vmFd, device.irq);
    const requests = new BlockRequests(device.spec);
    this.serve = (chain) => requests.serve(memory, chain);
    this.notified = device.kicks.map(() => false);
  }

  private word(k: number): number {
    return Atomics.load(control, this.device.base + k);
  }

  private load(): void {
    this.generation = this.word(DEVICE_GENERATION);
    this.indirect = this.word(DEVICE_INDIRECT) === 1;
    const eventIdx = this.word(DEVICE_EVENT_IDX) === 1;
    this.broken = false;
    this.queues = [];
    const count = this.word(DEVICE_QUEUES);
    for (let i = 0; i < count; i++) {
      const w = (k: number) => this.word(DEVICE_QUEUE_BASE + QUEUE_WORDS * i + k) >>> 0;
      const q = new Virtqueue(w(1));
      q.ready = w(0) === 1;
      q.descTable = w(2) + w(3) * 2 ** 32;
      q.availRing = w(4) + w(5) * 2 ** 32;
      q.usedRing = w(6) + w(7) * 2 ** 32;
      q.eventIdx = eventIdx;
      this.queues.push(q);
    }
  }

  /** Serves the notified queues; the caller holds BUSY. */
  serveNotified(): void {
    if (this.word(DEVICE_STATE) !== STATE_ACTIVE) return;
    if (this.word(DEVICE_GENERATION) !== this.generation) this.load();
    if (this.broken) return;
    try {
      this.notified.forEach((yes, i) => {
        const q = this.queues[i];
        if (!yes || !q?.ready) return;
        if (serveAvailable(q, memory, this.indirect, this.serve) > 0 && q.wantsInterrupt(memory)) {
          this.interrupt.raise(VIRTIO_MMIO_INT_VRING);
          this.edge.raise();
        }
      });
    } catch (err) {
      if (!(err instanceof QueueError)) throw err;
      this.broken = true;
      send({ device: this.index, queueError: err.message, generation: this.generation });
    }
  }
}

const served = data.devices.map((d, i) => new Served(i, d));
/** The wake fd first, then every device's kicks: [device, queue] for each pollfd after it. */
const owners: [Served, number][] = served.flatMap((s) =>
  s.device.kicks.map((_, q) => [s, q] as [Served, number]),
);
const fds = [data.wake, ...served.flatMap((s) => s.device.kicks)];
const set = pollInputSet(fds);

function send(message: QueueThreadMessage): void {
  parentPort?.postMessage(message);
}

function run(): void {
  for (;;) {
    try {
      poll(set, fds.length, -1, "poll in the disks' queue thread");
    } catch (err) {
      if (err instanceof SyscallError && err.code === "EINTR") continue;
      throw err;
    }
    // EXIT first: once the VM ends, the fds may belong to nobody (see QueueThread).
    if (Atomics.load(control, CONTROL_EXIT) === 1) return;
    for (let i = 0; i < fds.length; i++) {
      if (!polled(set, i)) continue;
      readRaw(fds[i] as number, scratch);
      if (i === 0) {
        // A wake (an activation, or a notify that came as an MMIO write): every queue.
        for (const s of served) s.notified.fill(true);
        continue;
      }
      const [s, q] = owners[i - 1] as [Served, number];
      s.notified[q] = true;
    }
    Atomics.store(control, CONTROL_BUSY, 1);
    try {
      if (Atomics.load(control, CONTROL_EXIT) === 1) return;
      for (const s of served) s.serveNotified();
    } finally {
      Atomics.store(control, CONTROL_BUSY, 0);
      Atomics.notify(control, CONTROL_BUSY);
    }
    for (const s of served) s.notified.fill(false);
  }
}

try {
  run();
} catch (err) {
  send({ fatal: (err as Error).message });
}
