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
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from "../../src/kvm/index.js";
import type { GuestMemory, MmioTransport } from "../../src/vmm/index.js";

export const DESC = 0x10000;
export const AVAIL = 0x11000;
export const USED = 0x12000;
export const DATA = 0x20000;

export class TestDriver {
  private availIdx = 0;
  private usedSeen = 0;

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

  /** Negotiates `features` and brings queue 0 up at the fixed addresses above; returns the status. */
  init(
    features: bigint,
    layout = { desc: DESC, avail: AVAIL, used: USED, size: this.queueSize },
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
    this.reg(VIRTIO_MMIO_QUEUE_SEL, 0);
    this.reg(VIRTIO_MMIO_QUEUE_NUM, layout.size);
    this.reg(VIRTIO_MMIO_QUEUE_DESC_LOW, layout.desc % 2 ** 32);
    this.reg(VIRTIO_MMIO_QUEUE_DESC_HIGH, Math.floor(layout.desc / 2 ** 32));
    this.reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, layout.avail % 2 ** 32);
    this.reg(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, Math.floor(layout.avail / 2 ** 32));
    this.reg(VIRTIO_MMIO_QUEUE_USED_LOW, layout.used % 2 ** 32);
    this.reg(VIRTIO_MMIO_QUEUE_USED_HIGH, Math.floor(layout.used / 2 ** 32));
    this.reg(VIRTIO_MMIO_QUEUE_READY, 1);
    this.availIdx = 0;
    this.usedSeen = 0;
    this.reg(VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
    return this.reg(VIRTIO_MMIO_STATUS);
  }

  /** Posts one chain of [address, length, writable] buffers and notifies. */
  submit(buffers: [number, number, boolean][]): void {
    buffers.forEach(([address, length, writable], i) => {
      const d = DESC + 16 * i;
      this.memory.writeU64(d, address);
      this.memory.writeU32(d + 8, length);
      const next = i + 1 < buffers.length;
      this.memory.writeU16(
        d + 12,
        (next ? VRING_DESC_F_NEXT : 0) | (writable ? VRING_DESC_F_WRITE : 0),
      );
      this.memory.writeU16(d + 14, next ? i + 1 : 0);
    });
    this.memory.writeU16(AVAIL + 4 + 2 * (this.availIdx % this.queueSize), 0);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.memory.writeU16(AVAIL + 2, this.availIdx);
    this.reg(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
  }

  /** The used entry for the last request: [head, written], or null if none came back. */
  used(): [number, number] | null {
    const idx = this.memory.readU16(USED + 2);
    if (idx === this.usedSeen) return null;
    const slot = USED + 4 + 8 * (this.usedSeen % this.queueSize);
    this.usedSeen = (this.usedSeen + 1) & 0xffff;
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
