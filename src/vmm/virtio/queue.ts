import {
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from "../../kvm/index.js";
import { type GuestMemory, GuestMemoryError } from "../guest-memory.js";

/**
 * A split virtqueue (virtio 1.2, 2.7), read from guest memory that the guest controls. It
 * is all untrusted: every index, address, length and chain is checked, and anything wrong
 * is a QueueError, after which the device stops using the queue (NEEDS_RESET). The VMM
 * itself never fails because of it.
 */

export class QueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "QueueError";
  }
}

export interface Descriptor {
  address: number;
  length: number;
  writable: boolean;
}

export interface Chain {
  /** Index of the head descriptor: what goes back in the used ring. */
  head: number;
  descriptors: Descriptor[];
}

interface RingViews {
  memory: GuestMemory;
  size: number;
  /** Guest addresses of the descriptor table, the available ring and the used ring. */
  at: [number, number, number];
  descriptors: DataView;
  available: DataView;
  used: DataView;
}

const DESC_SIZE = 16;

/**
 * A full memory fence. With VIRTIO_RING_F_EVENT_IDX, each side writes one index and then
 * reads the other's: the device publishes avail_event and reads the available index, the
 * driver publishes the available index and reads avail_event. x86 may let a load pass an
 * earlier store, and then both would read the old value and neither would notify: a queue
 * stalled for good. A sequentially consistent atomic is a locked instruction on x86, which
 * orders every load and store around it, guest memory's too.
 */
const fenceWord = new Int32Array(new SharedArrayBuffer(4));
function memoryFence(): void {
  Atomics.exchange(fenceWord, 0, 0);
}
/** The largest indirect table we follow; Linux never builds one longer than the queue. */
const MAX_INDIRECT = 1024;
/** The most bytes one request may cover. */
const MAX_CHAIN_BYTES = 256 * 1024 * 1024;

export class Virtqueue {
  size = 0;
  ready = false;
  descTable = 0;
  availRing = 0;
  usedRing = 0;
  /**
   * VIRTIO_RING_F_EVENT_IDX was negotiated: the driver says in used_event when it wants an
   * interrupt, and the device says in avail_event when it wants a notification.
   */
  eventIdx = false;
  private lastAvail = 0;
  private usedIdx = 0;
  /** The used index when the device last decided whether to interrupt (event index mode). */
  private signalledUsed = 0;
  /** Views of the three areas, made once for where the driver put them (see rings()). */
  private views: RingViews | null = null;

  constructor(readonly maxSize: number) {
    this.size = maxSize;
  }

  reset(): void {
    this.size = this.maxSize;
    this.ready = false;
    this.descTable = this.availRing = this.usedRing = 0;
    this.lastAvail = this.usedIdx = this.signalledUsed = 0;
    this.eventIdx = false;
    this.views = null;
  }

  /** The three areas of the split ring where the driver put them: [guest address, bytes]. */
  areas(): Record<"descriptors" | "available" | "used", [number, number]> {
    const n = this.size;
    return {
      descriptors: [this.descTable, DESC_SIZE * n],
      available: [this.availRing, 6 + 2 * n],
      used: [this.usedRing, 6 + 8 * n],
    };
  }

  /** Checks what the driver set up, once, when the device is activated. */
  validate(memory: GuestMemory): void {
    const n = this.size;
    if (n === 0 || n > this.maxSize || (n & (n - 1)) !== 0) {
      throw new QueueError(`queue size ${n} is not a power of two up to ${this.maxSize}`);
    }
    if (this.descTable % 16 || this.availRing % 2 || this.usedRing % 4) {
      throw new QueueError("queue areas are misaligned");
    }
    const { descriptors, available, used } = this.areas();
    const areas: [string, number, number][] = [
      ["descriptor table", ...descriptors],
      ["available ring", ...available],
      ["used ring", ...used],
    ];
    for (const [name, address, length] of areas) {
      if (!memory.contains(address, length)) {
        throw new QueueError(`${name} at 0x${address.toString(16)}+${length} is outside guest RAM`);
      }
    }
  }

  /** Whether the driver has offered chains not yet taken (without taking one). */
  hasAvailable(memory: GuestMemory): boolean {
    return this.rings(memory).available.getUint16(2, true) !== this.lastAvail;
  }

  /** The next available chain, or null when the driver has offered nothing new. */
  pop(memory: GuestMemory, indirect: boolean): Chain | null {
    const rings = this.rings(memory);
    const availIdx = rings.available.getUint16(2, true);
    const pending = (availIdx - this.lastAvail) & 0xffff;
    if (pending === 0) return null;
    if (pending > this.size) {
      throw new QueueError(
        `available index ${availIdx} is ${pending} ahead of the ${this.size}-entry ring`,
      );
    }
    const head = rings.available.getUint16(4 + 2 * (this.lastAvail % this.size), true);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return { head, descriptors: this.walk(memory, rings.descriptors, head, indirect) };
  }

  private walk(
    memory: GuestMemory,
    descriptors: DataView,
    head: number,
    indirect: boolean,
  ): Descriptor[] {
    const out: Descriptor[] = [];
    // The table is read through one DataView, with no allocation per descriptor: a 1 MiB
    // request is some 260 descriptors, and each Buffer or BigInt per descriptor showed, as
    // did Buffer's readUInt32LE (TurboFan inlines DataView's getters).
    let table = descriptors;
    let tableSize = this.size;
    let index = head;
    let budget = this.size;
    let inIndirect = false;
    let total = 0;
    let seenWritable = false;
    for (;;) {
      if (index >= tableSize)
        throw new QueueError(`descriptor index ${index} is beyond its table of ${tableSize}`);
      if (budget-- <= 0) throw new QueueError(`descriptor chain from ${head} loops or is too long`);
      const at = DESC_SIZE * index;
      const address = table.getUint32(at, true) + table.getUint32(at + 4, true) * 2 ** 32;
      const length = table.getUint32(at + 8, true);
      const flags = table.getUint16(at + 12, true);
      const next = table.getUint16(at + 14, true);
      if (flags & VRING_DESC_F_INDIRECT) {
        if (!indirect) throw new QueueError("indirect descriptor without the feature");
        if (inIndirect) throw new QueueError("indirect descriptor inside an indirect table");
        if (flags & VRING_DESC_F_NEXT) throw new QueueError("indirect descriptor with NEXT set");
        if (length === 0 || length % DESC_SIZE || length / DESC_SIZE > MAX_INDIRECT) {
          throw new QueueError(`indirect table of ${length} bytes`);
        }
        if (!memory.contains(address, length))
          throw new QueueError("indirect table is outside guest RAM");
        table = this.dataView(memory, address, length);
        tableSize = length / DESC_SIZE;
        budget = tableSize;
        index = 0;
        inIndirect = true;
        continue;
      }
      const writable = (flags & VRING_DESC_F_WRITE) !== 0;
      if (!writable && seenWritable)
        throw new QueueError("a device-readable descriptor follows a writable one");
      seenWritable ||= writable;
      total += length;
      if (total > MAX_CHAIN_BYTES)
        throw new QueueError(`chain from ${head} covers more than ${MAX_CHAIN_BYTES} bytes`);
      if (!memory.contains(address, length)) {
        throw new QueueError(
          `descriptor at 0x${address.toString(16)}+${length} is outside guest RAM`,
        );
      }
      out.push({ address, length, writable });
      if (!(flags & VRING_DESC_F_NEXT)) return out;
      index = next;
    }
  }

  /** Returns a chain to the driver with the number of bytes written into it. */
  pushUsed(memory: GuestMemory, head: number, written: number): void {
    const used = this.rings(memory).used;
    const slot = 4 + 8 * (this.usedIdx % this.size);
    used.setUint32(slot, head, true);
    used.setUint32(slot + 4, written >>> 0, true);
    // x86 keeps stores in order, so the entry is visible before the index that publishes it.
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    used.setUint16(2, this.usedIdx, true);
  }

  /**
   * Whether the driver wants an interrupt for the buffers used since the last time this was
   * asked. With event indexes: when the used index passed used_event since then (virtio 1.2,
   * 2.7.10), so a driver busy taking used buffers is not interrupted for each.
   */
  wantsInterrupt(memory: GuestMemory): boolean {
    const available = this.rings(memory).available;
    if (!this.eventIdx) return (available.getUint16(0, true) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    // The used index just written must be visible before used_event is read (see memoryFence).
    memoryFence();
    const event = available.getUint16(4 + 2 * this.size, true);
    const old = this.signalledUsed;
    this.signalledUsed = this.usedIdx;
    return needEvent(event, this.usedIdx, old);
  }

  /**
   * Asks the driver to notify for the next buffer it makes available (avail_event, in event
   * index mode), then says whether one came meanwhile: a device that found its queue empty
   * calls this before it waits for a notification, and serves again when it returns true.
   * Without event indexes the driver notifies every time, and this only looks.
   */
  armNotify(memory: GuestMemory): boolean {
    const rings = this.rings(memory);
    if (this.eventIdx) {
      rings.used.setUint16(4 + 8 * this.size, this.lastAvail, true);
      memoryFence();
    }
    return this.hasAvailable(memory);
  }

  /**
   * The three areas as DataViews, made again only when the driver moves or resizes them: a
   * Buffer for every index read cost more than the rest of a small request.
   */
  private rings(memory: GuestMemory): RingViews {
    const v = this.views;
    if (
      v?.memory === memory &&
      v.size === this.size &&
      v.at[0] === this.descTable &&
      v.at[1] === this.availRing &&
      v.at[2] === this.usedRing
    )
      return v;
    const { descriptors, available, used } = this.areas();
    this.views = {
      memory,
      size: this.size,
      at: [this.descTable, this.availRing, this.usedRing],
      descriptors: this.dataView(memory, ...descriptors),
      available: this.dataView(memory, ...available),
      used: this.dataView(memory, ...used),
    };
    return this.views;
  }

  private dataView(memory: GuestMemory, address: number, length: number): DataView {
    const bytes = this.slice(memory, address, length);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  private slice(memory: GuestMemory, address: number, length: number): Buffer {
    try {
      return memory.slice(address, length);
    } catch (err) {
      if (err instanceof GuestMemoryError) throw new QueueError(err.message);
      throw err;
    }
  }
}

/**
 * Serves every chain the driver has made available: `serve` returns how many bytes it wrote
 * into the chain, which goes back to the driver in the used ring. Returns how many chains
 * were served; whoever calls it signals the driver when that is more than none.
 */
export function serveAvailable(
  queue: Virtqueue,
  memory: GuestMemory,
  indirect: boolean,
  serve: (chain: Chain) => number,
): number {
  let served = 0;
  do {
    for (let chain = queue.pop(memory, indirect); chain; chain = queue.pop(memory, indirect)) {
      queue.pushUsed(memory, chain.head, serve(chain));
      served++;
    }
  } while (queue.armNotify(memory));
  return served;
}

/**
 * vring_need_event: whether the index moving from `old` to `now` passed `event` (all 16-bit,
 * wrapping): the driver asked to hear of the entry at `event` and that entry is among those
 * added since the last notification.
 */
export function needEvent(event: number, now: number, old: number): boolean {
  return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
}

/** Copies the device-readable part of a chain, up to limit bytes. */
export function gatherReadable(
  memory: GuestMemory,
  chain: Chain,
  limit = Number.POSITIVE_INFINITY,
): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  for (const d of chain.descriptors) {
    if (d.writable || size >= limit) break;
    const take = Math.min(d.length, limit - size);
    parts.push(memory.slice(d.address, take));
    size += take;
  }
  return Buffer.concat(parts, size);
}

/** The device-writable buffers of a chain, as host slices of guest memory. */
export function writableSlices(memory: GuestMemory, chain: Chain): Buffer[] {
  return chain.descriptors.filter((d) => d.writable).map((d) => memory.slice(d.address, d.length));
}
