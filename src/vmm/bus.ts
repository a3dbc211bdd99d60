/**
 * An address space of devices (port I/O or MMIO), as in Firecracker: each device owns a
 * range and sees offsets into it. An access to no device reads as all ones and writes go
 * nowhere, as on real hardware, and are counted so that a buggy guest shows in stats.
 */

export interface BusDevice {
  readonly name: string;
  /** Fill data with what the guest reads at offset (data.length is 1, 2, 4 or 8). */
  read(offset: number, data: Buffer): void;
  write(offset: number, data: Buffer): void;
}

export class BusError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BusError";
  }
}

interface Range {
  base: number;
  length: number;
  device: BusDevice;
}

export class Bus {
  private ranges: Range[] = [];
  unclaimedReads = 0;
  unclaimedWrites = 0;

  constructor(readonly name: string) {}

  insert(device: BusDevice, base: number, length: number): void {
    if (length <= 0) throw new BusError(`${device.name}: empty range on the ${this.name} bus`);
    const clash = this.ranges.find((r) => base < r.base + r.length && r.base < base + length);
    if (clash) {
      throw new BusError(
        `${device.name} at 0x${base.toString(16)}+${length} overlaps ${clash.device.name} on the ${this.name} bus`,
      );
    }
    this.ranges.push({ base, length, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  private find(address: number, size: number): Range | undefined {
    // Few devices per bus: a linear scan is faster than anything cleverer here.
    for (const r of this.ranges) {
      if (address >= r.base && address + size <= r.base + r.length) return r;
    }
    return undefined;
  }

  read(address: number, data: Buffer): boolean {
    const r = this.find(address, data.length);
    if (!r) {
      this.unclaimedReads++;
      data.fill(0xff);
      return false;
    }
    r.device.read(address - r.base, data);
    return true;
  }

  write(address: number, data: Buffer): boolean {
    const r = this.find(address, data.length);
    if (!r) {
      this.unclaimedWrites++;
      return false;
    }
    r.device.write(address - r.base, data);
    return true;
  }
}
