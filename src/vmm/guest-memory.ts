import {
  MADV_DONTFORK,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_NORESERVE,
  MAP_PRIVATE,
  type Mapping,
  madvise,
  mmap,
  mmapAligned,
  munmap,
  PROT_READ,
  PROT_WRITE,
  viewAt,
} from "../kvm/index.js";

/**
 * Guest RAM: anonymous host memory mapped into the guest. Every address and length that
 * comes from the guest goes through slice(), which refuses anything outside RAM: a guest
 * may hand us any number, and it must never reach host memory beyond its own.
 */

export class GuestMemoryError extends Error {
  constructor(
    readonly address: number,
    readonly length: number,
    reason = "outside guest RAM",
  ) {
    super(`guest range 0x${address.toString(16)}+${length} is ${reason}`);
    this.name = "GuestMemoryError";
  }
}

/** Start of the 32-bit MMIO hole: RAM above this goes above 4 GiB (as on a PC). */
export const MMIO_HOLE_START = 0xc000_0000;
export const MMIO_HOLE_END = 0x1_0000_0000;
/** Views start every MAX_VIEW bytes: V8 ArrayBuffers are limited, so big regions are split. */
const MAX_VIEW = 1 << 30;
/**
 * Each view reaches this far into the next one, so that any range up to this long lies
 * inside one view: a ring or a buffer that a guest puts across a 1 GiB line still works.
 */
const VIEW_OVERLAP = 1 << 20;
/** An x86 huge page: guest RAM starts on one, so that KVM can map it with huge entries. */
const HUGE_PAGE = 2 << 20;

export interface RegionLayout {
  guestAddress: number;
  size: number;
  hostAddress: bigint;
}

export interface MemoryRegion extends RegionLayout {
  /** Views starting every MAX_VIEW bytes, VIEW_OVERLAP bytes longer, in order. */
  chunks: Buffer[];
  /** hostAddress as a number (user-space addresses are below 2^47): no BigInt per request. */
  hostBase: number;
}

/** Views of a region's host memory, one every MAX_VIEW bytes, each VIEW_OVERLAP longer. */
function chunksAt(region: RegionLayout): Buffer[] {
  const chunks: Buffer[] = [];
  for (let off = 0; off < region.size; off += MAX_VIEW) {
    const length = Math.min(MAX_VIEW + VIEW_OVERLAP, region.size - off);
    chunks.push(Buffer.from(viewAt(region.hostAddress + BigInt(off), length)));
  }
  return chunks;
}

function withViews(region: RegionLayout): MemoryRegion {
  return { ...region, chunks: chunksAt(region), hostBase: Number(region.hostAddress) };
}

export class GuestMemory {
  readonly regions: MemoryRegion[] = [];
  private readonly mappings: Mapping[] = [];

  /**
   * Maps `size` bytes of RAM, split around the MMIO hole; or, given `existing` (another
   * GuestMemory's layout()), views that RAM from another thread of this process. A view maps
   * and unmaps nothing: the owner keeps the RAM mapped while views use it.
   */
  constructor(
    readonly size: number,
    options: { hugepages?: boolean; existing?: readonly RegionLayout[] } = {},
  ) {
    if (options.existing) {
      for (const r of options.existing) this.regions.push(withViews(r));
      return;
    }
    if (!Number.isSafeInteger(size) || size < 1 << 20 || size % 4096 !== 0) {
      throw new RangeError(
        `guest memory must be a whole number of pages, at least 1 MiB (got ${size})`,
      );
    }
    const low = Math.min(size, MMIO_HOLE_START);
    const layout: [number, number][] = [[0, low]];
    if (size > low) layout.push([MMIO_HOLE_END, size - low]);
    for (const [guestAddress, regionSize] of layout) {
      const flags =
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (options.hugepages ? MAP_HUGETLB : 0);
      const prot = PROT_READ | PROT_WRITE;
      // hugetlbfs pages come aligned; transparent ones need the mapping aligned (libc.ts).
      const mapping = options.hugepages
        ? mmap(regionSize, prot, flags, -1, "mapping guest RAM")
        : mmapAligned(regionSize, HUGE_PAGE, prot, flags, "mapping guest RAM");
      this.mappings.push(mapping);
      // A fork (spawning a helper) must not copy or share the guest's memory.
      madvise(mapping, MADV_DONTFORK, "madvise(MADV_DONTFORK) on guest RAM");
      if (!options.hugepages) {
        try {
          madvise(mapping, MADV_HUGEPAGE, "madvise(MADV_HUGEPAGE)");
        } catch {
          // Transparent hugepages are an optimisation; without them RAM still works.
        }
      }
      const region = { guestAddress, size: regionSize, hostAddress: mapping.address };
      this.regions.push(withViews(region));
    }
  }

  /** Where the RAM is, for a view of it on another thread (see the constructor). */
  layout(): RegionLayout[] {
    return this.regions.map(({ guestAddress, size, hostAddress }) => ({
      guestAddress,
      size,
      hostAddress,
    }));
  }

  /**
   * The host bytes behind [address, address + length), or a GuestMemoryError. A range longer
   * than VIEW_OVERLAP that crosses a 1 GiB line has no single view: device buffers that long
   * go to the kernel by host address instead (hostPointer()).
   */
  slice(address: number, length: number): Buffer {
    if (
      !Number.isSafeInteger(address) ||
      !Number.isSafeInteger(length) ||
      address < 0 ||
      length < 0
    ) {
      throw new GuestMemoryError(address, length, "not a valid range");
    }
    for (const region of this.regions) {
      const off = address - region.guestAddress;
      if (off < 0 || off + length > region.size) continue;
      const chunk = region.chunks[Math.floor(off / MAX_VIEW)];
      const inChunk = off % MAX_VIEW;
      if (!chunk || inChunk + length > chunk.length) {
        throw new GuestMemoryError(address, length, "split across two host views");
      }
      return chunk.subarray(inChunk, inChunk + length);
    }
    throw new GuestMemoryError(address, length);
  }

  /**
   * Where [address, address + length) is in this process: for the host kernel (vhost), which
   * reads guest memory through the VMM's own mapping. A GuestMemoryError unless the range lies
   * inside one region.
   */
  hostAddress(address: number, length: number): bigint {
    return BigInt(this.hostPointer(address, length));
  }

  /**
   * hostAddress() as a number, for a struct iovec that the kernel fills or reads (preadv):
   * the same checks as slice(), without a Buffer or a BigInt for each guest buffer.
   */
  hostPointer(address: number, length: number): number {
    if (
      Number.isSafeInteger(address) &&
      Number.isSafeInteger(length) &&
      address >= 0 &&
      length >= 0
    ) {
      for (const region of this.regions) {
        const off = address - region.guestAddress;
        if (off >= 0 && off + length <= region.size) return region.hostBase + off;
      }
    }
    throw new GuestMemoryError(address, length);
  }

  contains(address: number, length: number): boolean {
    // A loop, not some(): a queue walk asks this for every descriptor.
    for (const r of this.regions) {
      if (address >= r.guestAddress && address + length <= r.guestAddress + r.size && length >= 0)
        return true;
    }
    return false;
  }

  read(address: number, into: Buffer): void {
    this.slice(address, into.length).copy(into);
  }

  write(address: number, data: Buffer | Uint8Array): void {
    this.slice(address, data.length).set(data);
  }

  readU16(address: number): number {
    return this.slice(address, 2).readUInt16LE(0);
  }

  readU32(address: number): number {
    return this.slice(address, 4).readUInt32LE(0);
  }

  readU64(address: number): bigint {
    return this.slice(address, 8).readBigUInt64LE(0);
  }

  writeU16(address: number, value: number): void {
    this.slice(address, 2).writeUInt16LE(value, 0);
  }

  writeU32(address: number, value: number): void {
    this.slice(address, 4).writeUInt32LE(value >>> 0, 0);
  }

  writeU64(address: number, value: bigint | number): void {
    this.slice(address, 8).writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)), 0);
  }

  /** Highest guest-physical address of RAM below the MMIO hole (end of low memory). */
  get lowEnd(): number {
    return this.regions[0]?.size ?? 0;
  }

  close(): void {
    for (const m of this.mappings) munmap(m);
    this.mappings.length = 0;
    this.regions.length = 0;
  }
}
