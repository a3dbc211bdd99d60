// A minimal virtio-mmio driver written in TypeScript for tests: it talks to an MmioTransport
// through its register interface and lays out split rings in real (mmap'd) guest memory,
// exactly as a guest would, so device code is exercised through the same paths.
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_STATUS,
  VIRTIO_RING_F_EVENT_IDX,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from "../../src/kvm/index.js";
import type { GuestMemory, MmioTransport } from "../../src/vmm/index.js";

export const DESC = 0x10000;
export const AVAIL = 0x11000;
export const USED = 0x12000;
export const DATA = 0x20000;
/** Queue q's areas are those of queue 0 moved up by q * QUEUE_STRIDE. */
export const QUEUE_STRIDE = 0x4000;

export class TestDriver {
  private availIdx: number[] = [0, 0, 0, 0];
  private usedSeen: number[] = [0, 0, 0, 0];
  /** The available index at each queue's last notification decision (event index mode). */
  private kickedIdx: number[] = [0, 0, 0, 0];
  /** VIRTIO_RING_F_EVENT_IDX was negotiated: notify only when avail_event asks. */
  eventIdx = false;
  /** QueueNotify writes made, per queue. */
  readonly kicks: number[] = [0, 0, 0, 0];

  constructor(
    readonly transport: MmioTransport,
    readonly memory: GuestMemory,
    readonly queueSize = 16,
  ) {}

  reg(offset: number, value?: number): number {
    const b = Buffer.alloc(4);
    if (value === undefined) {
      this.transport.read(offset, b);
      return b.readUInt32LE(0);
    }
    b.writeUInt32LE(value >>> 0, 0);
    this.transport.write(offset, b);
    return value;
  }

  deviceFeatures(): bigint {
    this.reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    const lo = this.reg(VIRTIO_MMIO_DEVICE_FEATURES);
    this.reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    return (BigInt(this.reg(VIRTIO_MMIO_DEVICE_FEATURES)) << 32n) | BigInt(lo);
  }

  /**
   * Negotiates `features` and brings `queues` queues up (queue 0 at the fixed addresses
   * above, or at `layout`, the others QUEUE_STRIDE apart); returns the status.
   */
  init(
    features: bigint,
    layout = { desc: DESC, avail: AVAIL, used: USED, size: this.queueSize },
    queues = 1,
  ): number {
    this.reg(VIRTIO_MMIO_STATUS, 0);
    this.reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    this.reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    this.reg(VIRTIO_MMIO_DRIVER_FEATURES, Number(features & 0xffffffffn));
    this.reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    this.reg(VIRTIO_MMIO_DRIVER_FEATURES, Number(features >> 32n));
    const s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    this.reg(VIRTIO_MMIO_STATUS, s);
    if (!(this.reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK))
      return this.reg(VIRTIO_MMIO_STATUS);
    for (let q = 0; q < queues; q++) {
      const shift = q * QUEUE_STRIDE;
      this.memory.slice(DESC + shift, 0x3000).fill(0);
      this.reg(VIRTIO_MMIO_QUEUE_SEL, q);
      this.reg(VIRTIO_MMIO_QUEUE_NUM, layout.size);
      this.reg(VIRTIO_MMIO_QUEUE_DESC_LOW, (layout.desc + shift) % 2 ** 32);
      this.reg(VIRTIO_MMIO_QUEUE_DESC_HIGH, Math.floor(layout.desc / 2 ** 32));
      this.reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, (layout.avail + shift) % 2 ** 32);
      this.reg(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, Math.floor(layout.avail / 2 ** 32));
      this.reg(VIRTIO_MMIO_QUEUE_USED_LOW, (layout.used + shift) % 2 ** 32);
      this.reg(VIRTIO_MMIO_QUEUE_USED_HIGH, Math.floor(layout.used / 2 ** 32));
      this.reg(VIRTIO_MMIO_QUEUE_READY, 1);
      this.availIdx[q] = 0;
      this.usedSeen[q] = 0;
      this.kickedIdx[q] = 0;
      this.kicks[q] = 0;
    }
    this.eventIdx = (features & (1n << BigInt(VIRTIO_RING_F_EVENT_IDX))) !== 0n;
    this.reg(VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
    return this.reg(VIRTIO_MMIO_STATUS);
  }

  /**
   * Posts one chain of [address, length, writable] buffers from descriptor `first`, and
   * notifies: always, or with event indexes only when the device's avail_event asks for it,
   * as Linux's driver does.
   */
  submit(buffers: [number, number, boolean][], queue = 0, first = 0, notify = true): void {
    const shift = queue * QUEUE_STRIDE;
    buffers.forEach(([address, length, writable], i) => {
      const d = DESC + shift + 16 * (first + i);
      this.memory.writeU64(d, address);
      this.memory.writeU32(d + 8, length);
      const next = i + 1 < buffers.length;
      const flags = (next ? VRING_DESC_F_NEXT : 0) | (writable ? VRING_DESC_F_WRITE : 0);
      this.memory.writeU16(d + 12, flags);
      this.memory.writeU16(d + 14, next ? first + i + 1 : 0);
    });
    const idx = this.availIdx[queue] ?? 0;
    this.memory.writeU16(AVAIL + shift + 4 + 2 * (idx % this.queueSize), first);
    this.availIdx[queue] = (idx + 1) & 0xffff;
    this.memory.writeU16(AVAIL + shift + 2, this.availIdx[queue] ?? 0);
    if (notify) this.notify(queue);
  }

  /** Notifies the queue (with event indexes, only if the device asked); true if it did. */
  notify(queue = 0): boolean {
    if (this.eventIdx) {
      const now = this.availIdx[queue] ?? 0;
      const old = this.kickedIdx[queue] ?? 0;
      this.kickedIdx[queue] = now;
      // The device asked to hear of entry avail_event: is it among old..now-1 (wrapping)?
      const asked = this.availEvent(queue);
      if (((asked - old) & 0xffff) >= ((now - old) & 0xffff)) return false;
    }
    this.kicks[queue] = (this.kicks[queue] ?? 0) + 1;
    this.reg(VIRTIO_MMIO_QUEUE_NOTIFY, queue);
    return true;
  }

  /** The device's avail_event: the u16 after the used ring's entries. */
  availEvent(queue = 0): number {
    return this.memory.readU16(USED + queue * QUEUE_STRIDE + 4 + 8 * this.queueSize);
  }

  /** Sets used_event, the u16 after the available ring's entries: interrupt me after it. */
  setUsedEvent(value: number, queue = 0): void {
    this.memory.writeU16(AVAIL + queue * QUEUE_STRIDE + 4 + 2 * this.queueSize, value & 0xffff);
  }

  /** The next used entry of a queue: [head, written], or null if none came back. */
  used(queue = 0): [number, number] | null {
    const shift = queue * QUEUE_STRIDE;
    const seen = this.usedSeen[queue] ?? 0;
    const idx = this.memory.readU16(USED + shift + 2);
    if (idx === seen) return null;
    const slot = USED + shift + 4 + 8 * (seen % this.queueSize);
    this.usedSeen[queue] = (seen + 1) & 0xffff;
    return [this.memory.readU32(slot), this.memory.readU32(slot + 4)];
  }

  /** A block request: header, optional data buffers, status byte; returns the status. */
  block(type: number, sector: bigint, data: [number, number, boolean][] = []): number {
    const header = DATA;
    this.memory.writeU32(header, type);
    this.memory.writeU32(header + 4, 0);
    this.memory.writeU64(header + 8, sector);
    const status = DATA + 16;
    this.memory.slice(status, 1)[0] = 0xff;
    this.submit([[header, 16, false], ...data, [status, 1, true]]);
    return this.memory.slice(status, 1)[0] ?? -1;
  }
}

/**
 * Writes DISCARD/WRITE_ZEROES ranges (sector, count, flags: struct
 * virtio_blk_discard_write_zeroes) at `at`; returns them as a request's data buffer.
 */
export function discardRanges(
  memory: GuestMemory,
  at: number,
  list: [number | bigint, number, number][],
): [number, number, boolean][] {
  list.forEach(([sector, count, flags], i) => {
    memory.writeU64(at + 16 * i, BigInt(sector));
    memory.writeU32(at + 16 * i + 8, count);
    memory.writeU32(at + 16 * i + 12, flags);
  });
  return [[at, 16 * list.length, false]];
}
