import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../kvm/index.js";
import type { BusDevice } from "../bus.js";
import type { GuestMemory } from "../guest-memory.js";
import { InterruptStatus } from "./interrupt-status.js";
import { type Chain, QueueError, serveAvailable, Virtqueue } from "./queue.js";
import type { QueueThreadDevice, QueueThreadSpec } from "./queue-thread.js";

/** What a virtio device (blk, net, rng, ...) gives the transport. */
export interface VirtioDevice {
  readonly name: string;
  readonly deviceId: number;
  /** Feature bits offered; VIRTIO_F_VERSION_1 is added by the transport. */
  readonly features: bigint;
  readonly queueSizes: readonly number[];
  readConfig(offset: number, data: Buffer): void;
  writeConfig(offset: number, data: Buffer): void;
  /** The driver is ready: queues are set up and checked. */
  activate(context: DeviceContext): void;
  /** The driver notified a queue. May throw QueueError for a malformed queue. */
  notify(queue: number): void;
  reset(): void;
  /** Releases host resources (files, taps) when the VM ends. */
  close?(): void;
  /**
   * A device whose queues can be served on a thread of their own says what that thread needs;
   * the VM then serves them on its queue thread and hands the device its handle there.
   */
  queueThreadSpec?(): QueueThreadSpec;
  useQueueThread?(thread: QueueThreadDevice): void;
  /**
   * Queues the host kernel serves (vhost): the VMM does not watch their notifications, and
   * hands the device the eventfds instead, through attachKernelQueues().
   */
  readonly kernelQueues?: readonly number[];
  attachKernelQueues?(fds: KernelQueues): void;
}

/** The eventfds of a device whose queues the kernel serves. */
export interface KernelQueues {
  /** Per queue index: the ioeventfd the guest's QueueNotify write signals. */
  kicks: readonly number[];
  /** The irqfd that raises the device's interrupt line. */
  call: number;
}

export interface DeviceContext {
  memory: GuestMemory;
  queues: Virtqueue[];
  driverFeatures: bigint;
  /** Tells the driver a queue has used buffers (interrupt unless suppressed). */
  signalUsed(queue: number): void;
  /**
   * Serves every chain the driver has made available on a queue: `serve` returns the bytes
   * it wrote into the chain; the driver gets one interrupt for the batch.
   */
  serveQueue(queue: number, indirect: boolean, serve: (chain: Chain) => number): void;
  /** For work the device does outside notify() (input from the host): a QueueError found
   * there puts the device into NEEDS_RESET like one found in notify(). */
  fail(err: unknown): void;
}

/** "FLGD": the vendor id our devices report. */
const VENDOR_ID = 0x44474c46;

/**
 * The virtio-mmio transport, version 2 (virtio 1.2, 4.2): registers at a 4 KiB window,
 * device configuration from offset 0x100. A malformed queue or a driver breaking the
 * protocol sets DEVICE_NEEDS_RESET and the device stops; the VM goes on.
 */
export class MmioTransport implements BusDevice {
  readonly name: string;
  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private configGeneration = 0;
  private readonly queues: Virtqueue[];
  private activeNow = false;
  /** Why the device needs a reset, when it does. */
  broken: string | null = null;

  constructor(
    private readonly device: VirtioDevice,
    private readonly memory: GuestMemory,
    private readonly interrupt: () => void,
    private readonly onError: (message: string) => void = () => {},
    /** Shared with the vCPU threads, which answer the status and ack registers (see there). */
    private readonly interruptStatus = new InterruptStatus(),
  ) {
    this.name = `virtio-mmio ${device.name}`;
    this.queues = device.queueSizes.map((n) => new Virtqueue(n));
  }

  private get active(): boolean {
    return this.activeNow;
  }

  /**
   * The kernel raises a vhost device's line through the irqfd without telling us, and Linux
   * looks at its queues only when INTERRUPT_STATUS says VRING: so it always does while such a
   * device is live. An interrupt with nothing used is only a wasted look.
   */
  private set active(live: boolean) {
    this.activeNow = live;
    this.interruptStatus.setKernelQueues(live && (this.device.kernelQueues?.length ?? 0) > 0);
  }

  get offeredFeatures(): bigint {
    return this.device.features | (1n << BigInt(VIRTIO_F_VERSION_1));
  }

  read(offset: number, data: Buffer): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.device.readConfig(offset - VIRTIO_MMIO_CONFIG, data);
      return;
    }
    data.fill(0);
    if (data.length !== 4) return;
    data.writeUInt32LE(this.register(offset) >>> 0, 0);
  }

  private register(offset: number): number {
    const q = this.queues[this.queueSel];
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO_VERSION:
        return 2;
      case VIRTIO_MMIO_DEVICE_ID:
        return this.device.deviceId;
      case VIRTIO_MMIO_VENDOR_ID:
        return VENDOR_ID;
      case VIRTIO_MMIO_DEVICE_FEATURES:
        return this.deviceFeaturesSel > 1
          ? 0
          : Number((this.offeredFeatures >> BigInt(32 * this.deviceFeaturesSel)) & 0xffffffffn);
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return q ? q.maxSize : 0;
      case VIRTIO_MMIO_QUEUE_READY:
        return q?.ready ? 1 : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS:
        return this.interruptStatus.get();
      case VIRTIO_MMIO_STATUS:
        return this.status;
      case VIRTIO_MMIO_CONFIG_GENERATION:
        return this.configGeneration;
      default:
        return 0;
    }
  }

  write(offset: number, data: Buffer): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.device.writeConfig(offset - VIRTIO_MMIO_CONFIG, data);
      return;
    }
    if (data.length !== 4) return;
    const value = data.readUInt32LE(0);
    const q = this.queues[this.queueSel];
    // Queue registers may only change while the queue is not live.
    const setQueue = (apply: (queue: Virtqueue) => void) => {
      if (q && !q.ready && !this.active) apply(q);
    };
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = value;
        break;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = value;
        break;
      case VIRTIO_MMIO_DRIVER_FEATURES:
        if (this.driverFeaturesSel <= 1 && !(this.status & VIRTIO_CONFIG_S_FEATURES_OK)) {
          const shift = BigInt(32 * this.driverFeaturesSel);
          this.driverFeatures =
            (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(value) << shift);
        }
        break;
      case VIRTIO_MMIO_QUEUE_SEL:
        this.queueSel = value;
        break;
      case VIRTIO_MMIO_QUEUE_NUM:
        setQueue((queue) => {
          queue.size = value;
        });
        break;
      case VIRTIO_MMIO_QUEUE_READY:
        if (q) q.ready = value === 1;
        break;
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
        setQueue((queue) => {
          queue.descTable = low(queue.descTable, value);
        });
        break;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        setQueue((queue) => {
          queue.descTable = high(queue.descTable, value);
        });
        break;
      case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        setQueue((queue) => {
          queue.availRing = low(queue.availRing, value);
        });
        break;
      case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        setQueue((queue) => {
          queue.availRing = high(queue.availRing, value);
        });
        break;
      case VIRTIO_MMIO_QUEUE_USED_LOW:
        setQueue((queue) => {
          queue.usedRing = low(queue.usedRing, value);
        });
        break;
      case VIRTIO_MMIO_QUEUE_USED_HIGH:
        setQueue((queue) => {
          queue.usedRing = high(queue.usedRing, value);
        });
        break;
      case VIRTIO_MMIO_QUEUE_NOTIFY:
        this.notify(value);
        break;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        this.interruptStatus.acknowledge(value);
        break;
      case VIRTIO_MMIO_STATUS:
        this.setStatus(value);
        break;
      default:
        break;
    }
  }

  private setStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    // The driver may only add bits (spec 3.1.1), except FAILED, which it may set at any time.
    if ((value & this.status) !== this.status) return;
    const added = value & ~this.status;
    if (added & VIRTIO_CONFIG_S_FEATURES_OK) {
      const unknown = this.driverFeatures & ~this.offeredFeatures;
      if (unknown !== 0n || !(this.driverFeatures & (1n << BigInt(VIRTIO_F_VERSION_1)))) {
        // Refused: the driver sees FEATURES_OK unset when it reads the status back.
        this.status = value & ~VIRTIO_CONFIG_S_FEATURES_OK;
        return;
      }
    }
    this.status = value;
    if (added & VIRTIO_CONFIG_S_DRIVER_OK && !(value & VIRTIO_CONFIG_S_FAILED)) this.activate();
  }

  private activate(): void {
    try {
      const live = this.queues.filter((q) => q.ready);
      if (live.length === 0) throw new QueueError("no queue is ready");
      const eventIdx = (this.driverFeatures & (1n << BigInt(VIRTIO_RING_F_EVENT_IDX))) !== 0n;
      for (const q of live) {
        q.validate(this.memory);
        q.eventIdx = eventIdx;
      }
      this.device.activate({
        memory: this.memory,
        queues: this.queues,
        driverFeatures: this.driverFeatures,
        signalUsed: (index) => this.signalUsed(index),
        serveQueue: (index, indirect, serve) => this.serveQueue(index, indirect, serve),
        fail: (err) => this.fail(err),
      });
      this.active = true;
    } catch (err) {
      this.fail(err);
    }
  }

  /** A malformed queue that the device's queue thread found: the device needs a reset. */
  queueFailed(message: string): void {
    this.fail(new QueueError(message));
  }

  /** A queue notification that arrived through an ioeventfd rather than an MMIO exit. */
  notifyQueue(index: number): void {
    this.notify(index);
  }

  get queueCount(): number {
    return this.queues.length;
  }

  private notify(index: number): void {
    if (!this.active || this.broken) return;
    const q = this.queues[index];
    if (!q?.ready) return;
    try {
      this.device.notify(index);
    } catch (err) {
      this.fail(err);
    }
  }

  private serveQueue(index: number, indirect: boolean, serve: (chain: Chain) => number): void {
    const q = this.queues[index];
    if (q && serveAvailable(q, this.memory, indirect, serve) > 0) this.signalUsed(index);
  }

  private signalUsed(index: number): void {
    const q = this.queues[index];
    if (q && !q.wantsInterrupt(this.memory)) return;
    this.interruptStatus.raise(VIRTIO_MMIO_INT_VRING);
    this.interrupt();
  }

  /** A guest-made fault: the device needs a reset; other faults are the VMM's and propagate. */
  private fail(err: unknown): void {
    if (!(err instanceof QueueError)) throw err;
    this.broken = err.message;
    this.active = false;
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    this.interruptStatus.raise(VIRTIO_MMIO_INT_CONFIG);
    this.onError(`${this.device.name}: ${err.message}; the device needs a reset`);
    this.interrupt();
  }

  private reset(): void {
    this.status = 0;
    this.driverFeatures = 0n;
    this.deviceFeaturesSel = this.driverFeaturesSel = this.queueSel = 0;
    this.interruptStatus.clear();
    this.active = false;
    this.broken = null;
    this.configGeneration++;
    for (const q of this.queues) q.reset();
    this.device.reset();
  }

  get isActive(): boolean {
    return this.active;
  }
}

function low(current: number, value: number): number {
  return Math.floor(current / 2 ** 32) * 2 ** 32 + value;
}

function high(current: number, value: number): number {
  return value * 2 ** 32 + (current % 2 ** 32);
}
