import {
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
} from "../../kvm/index.js";

/**
 * The interrupt status of the virtio-mmio devices, in shared memory, so that a vCPU thread
 * answers the driver's INTERRUPT_STATUS read and INTERRUPT_ACK write by itself. Linux does
 * both on every virtio interrupt; handing each to the main thread and back cost two thread
 * switches per access, and on a loaded host (or under nested virtualisation) those switches
 * were most of a 4 KiB request's time. The main thread sets bits (used buffers, config
 * change), the vCPU threads clear them; both with atomics.
 *
 * Layout (Int32 words): [0] how many devices, [1] the size of each device's MMIO window, then
 * per device: its MMIO base address, its status bits, and 1 while the kernel serves its queues
 * (vhost: VRING is then always set, see MmioTransport).
 */
const HEADER_WORDS = 2;
const DEVICE_WORDS = 3;
const ADDRESS = 0;
const STATUS = 1;
const KERNEL_QUEUES = 2;

export class InterruptStatusTable {
  readonly words: Int32Array;

  constructor(
    readonly capacity: number,
    deviceSize: number,
  ) {
    this.words = new Int32Array(
      new SharedArrayBuffer(4 * (HEADER_WORDS + capacity * DEVICE_WORDS)),
    );
    this.words[1] = deviceSize;
  }

  /** The next device's cell, at its MMIO base address (below 4 GiB). */
  add(address: number): InterruptStatus {
    const n = Atomics.load(this.words, 0);
    if (n >= this.capacity) throw new RangeError(`more than ${this.capacity} virtio devices`);
    const at = HEADER_WORDS + n * DEVICE_WORDS;
    Atomics.store(this.words, at + ADDRESS, address | 0);
    Atomics.store(this.words, 0, n + 1);
    return new InterruptStatus(this.words, at);
  }
}

function statusAt(words: Int32Array<ArrayBufferLike>, at: number): number {
  const bits = Atomics.load(words, at + STATUS);
  return (Atomics.load(words, at + KERNEL_QUEUES) ? bits | VIRTIO_MMIO_INT_VRING : bits) >>> 0;
}

/** One device's interrupt status; a transport on its own gets a private one. */
export class InterruptStatus {
  constructor(
    /** The table's words and this device's cell in it: a queue thread raises bits there too. */
    readonly words: Int32Array<ArrayBufferLike> = new Int32Array(DEVICE_WORDS),
    readonly at = 0,
  ) {}

  /** What INTERRUPT_STATUS reads. */
  get(): number {
    return statusAt(this.words, this.at);
  }

  raise(bits: number): void {
    Atomics.or(this.words, this.at + STATUS, bits);
  }

  /** INTERRUPT_ACK. */
  acknowledge(bits: number): void {
    Atomics.and(this.words, this.at + STATUS, ~bits);
  }

  clear(): void {
    Atomics.store(this.words, this.at + STATUS, 0);
  }

  setKernelQueues(live: boolean): void {
    Atomics.store(this.words, this.at + KERNEL_QUEUES, live ? 1 : 0);
  }
}

/**
 * The vCPU thread's side: answers an MMIO access to a device's INTERRUPT_STATUS or
 * INTERRUPT_ACK register from the table. It runs on every such exit, so it allocates nothing
 * (garbage there grew each vCPU thread's heap by megabytes). Returns the value a read
 * returns, 0 for an acknowledged write, or -1 for anything else (the main thread's).
 */
export function answerInterruptAccess(
  words: Int32Array<ArrayBufferLike>,
  address: number,
  isWrite: boolean,
  value: number,
): number {
  const n = Atomics.load(words, 0);
  const size = words[1] ?? 0;
  for (let i = 0; i < n; i++) {
    const at = HEADER_WORDS + i * DEVICE_WORDS;
    const offset = address - (Atomics.load(words, at + ADDRESS) >>> 0);
    if (offset < 0 || offset >= size) continue;
    if (!isWrite && offset === VIRTIO_MMIO_INTERRUPT_STATUS) return statusAt(words, at);
    if (isWrite && offset === VIRTIO_MMIO_INTERRUPT_ACK) {
      Atomics.and(words, at + STATUS, ~value);
      return 0;
    }
    return -1;
  }
  return -1;
}
