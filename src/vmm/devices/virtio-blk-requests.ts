import { fsyncSync, writeSync } from "node:fs";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocate,
  SyscallError,
  UIO_MAXIOV,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from "../../kvm/index.js";
import type { GuestMemory } from "../guest-memory.js";
import { IoVectors } from "../io-vectors.js";
import { type Chain, type Descriptor, QueueError } from "../virtio/queue.js";

/**
 * virtio-blk's requests (virtio 1.2, 5.2.6) on a raw image file: read, write, flush, get-id,
 * discard and write-zeroes. Discard punches a hole in the file, so what a guest frees (fstrim,
 * a file system mounted with discard) stops taking space on the node. Plain data in, so that
 * the VMM's main thread or a queue thread of the device's own (QueueThread) can serve them
 * alike; the counters live in shared memory for the same reason.
 */

export const SECTOR = 512;
const HEADER_BYTES = 16;

/**
 * What we announce for DISCARD and WRITE_ZEROES: ranges of up to 2 GiB, up to 16 of them in
 * one request, discards in 4 KiB units (a host file system frees whole blocks; a guest
 * rounds its discards to this).
 */
export const MAX_DISCARD_SECTORS = 0x400000 - 8;
export const MAX_DISCARD_SEGMENTS = 16;
export const DISCARD_ALIGNMENT_SECTORS = 8;
/** struct virtio_blk_discard_write_zeroes */
const RANGE_BYTES = 16;
/** Zeros for WRITE_ZEROES where the file system zeroes no range itself. */
const ZEROS = Buffer.alloc(256 * 1024);

/** Everything a thread needs to serve a disk's requests. */
export interface BlockRequestsSpec {
  kind: "blk";
  /** The open image file: file descriptors belong to the process, not to a thread. */
  fd: number;
  sectors: number;
  readOnly: boolean;
  /** Up to 20 bytes the guest reads with GET_ID (a serial number). */
  id: string;
  /** Float64 counters, in STAT_NAMES order. */
  stats: SharedArrayBuffer;
}

const STAT_NAMES = [
  "reads",
  "writes",
  "flushes",
  "bytesRead",
  "bytesWritten",
  "errors",
  "discards",
  "writeZeroes",
] as const;
export type BlockStats = Record<(typeof STAT_NAMES)[number], number>;

export function blockStatsBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(8 * STAT_NAMES.length);
}

/** The counters as numbers; one thread writes them, any reads them. */
export function readBlockStats(buffer: SharedArrayBuffer): BlockStats {
  const values = new Float64Array(buffer);
  return Object.fromEntries(STAT_NAMES.map((name, i) => [name, values[i] ?? 0])) as BlockStats;
}

const READS = 0;
const WRITES = 1;
const FLUSHES = 2;
const BYTES_READ = 3;
const BYTES_WRITTEN = 4;
const ERRORS = 5;
const DISCARDS = 6;
const WRITE_ZEROES = 7;

export class BlockRequests {
  private readonly counters: Float64Array;
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private readonly ranges = Buffer.alloc(MAX_DISCARD_SEGMENTS * RANGE_BYTES);
  private readonly io = new IoVectors();

  constructor(private readonly spec: BlockRequestsSpec) {
    this.counters = new Float64Array(spec.stats);
  }

  private count(counter: number, n: number): void {
    this.counters[counter] = (this.counters[counter] ?? 0) + n;
  }

  /** One request; returns how many bytes were written into the guest's buffers. */
  serve(memory: GuestMemory, chain: Chain): number {
    const d = chain.descriptors;
    const statusDesc = d[d.length - 1];
    if (!statusDesc?.writable || statusDesc.length < 1 || d.length < 2) {
      throw new QueueError("block request without a writable status byte at its end");
    }
    const header = this.header;
    let got = 0;
    let i = 0;
    for (; i < d.length - 1 && got < HEADER_BYTES; i++) {
      const desc = d[i];
      if (!desc || desc.writable) break;
      const take = Math.min(desc.length, HEADER_BYTES - got);
      memory.slice(desc.address, take).copy(header, got);
      got += take;
      if (take < desc.length)
        throw new QueueError("block request header shares a buffer with data");
    }
    if (got < HEADER_BYTES) throw new QueueError("block request header is shorter than 16 bytes");
    const type = header.readUInt32LE(0);
    // Two halves, not a BigInt: a sector past 2^53 is past the end of any disk anyway.
    const sector = header.readUInt32LE(8) + header.readUInt32LE(12) * 2 ** 32;
    const data = d.slice(i, d.length - 1);
    const status = memory.slice(statusDesc.address, 1);
    let written = 0;
    let result = VIRTIO_BLK_S_OK;
    try {
      switch (type) {
        case VIRTIO_BLK_T_IN: {
          if (data.some((x) => !x.writable))
            throw new QueueError("read request with a read-only data buffer");
          const position = this.checkRange(sector, data);
          if (position < 0) {
            result = VIRTIO_BLK_S_IOERR;
            break;
          }
          written = this.transfer(memory, data, position, "read");
          this.count(READS, 1);
          this.count(BYTES_READ, written);
          break;
        }
        case VIRTIO_BLK_T_OUT: {
          if (data.some((x) => x.writable))
            throw new QueueError("write request with a writable data buffer");
          if (this.spec.readOnly) {
            result = VIRTIO_BLK_S_IOERR;
            break;
          }
          const position = this.checkRange(sector, data);
          if (position < 0) {
            result = VIRTIO_BLK_S_IOERR;
            break;
          }
          this.count(BYTES_WRITTEN, this.transfer(memory, data, position, "write"));
          this.count(WRITES, 1);
          break;
        }
        case VIRTIO_BLK_T_FLUSH:
          if (!this.spec.readOnly) fsyncSync(this.spec.fd);
          this.count(FLUSHES, 1);
          break;
        case VIRTIO_BLK_T_GET_ID: {
          const id = Buffer.alloc(VIRTIO_BLK_ID_BYTES);
          id.write(this.spec.id ?? "", "latin1");
          let at = 0;
          for (const x of data) {
            if (!x.writable) continue;
            const n = Math.min(x.length, id.length - at);
            id.copy(memory.slice(x.address, n), 0, at, at + n);
            at += n;
            written += n;
          }
          break;
        }
        case VIRTIO_BLK_T_DISCARD:
        case VIRTIO_BLK_T_WRITE_ZEROES:
          if (data.some((x) => x.writable))
            throw new QueueError("discard or write-zeroes request with a writable buffer");
          // Not offered on a read-only disk: a driver that sends it anyway is told so.
          if (this.spec.readOnly) {
            result = VIRTIO_BLK_S_UNSUPP;
            break;
          }
          result = this.discardOrZero(memory, data, type === VIRTIO_BLK_T_DISCARD);
          break;
        default:
          result = VIRTIO_BLK_S_UNSUPP;
      }
    } catch (err) {
      if (err instanceof QueueError) throw err;
      // A host I/O error is the guest's disk failing, not the VMM: report it in the status.
      this.count(ERRORS, 1);
      result = VIRTIO_BLK_S_IOERR;
    }
    status[0] = result;
    return written + 1;
  }

  /**
   * DISCARD or WRITE_ZEROES: every range is checked before any is applied, so a bad request
   * changes nothing. Returns the status.
   */
  private discardOrZero(memory: GuestMemory, data: Descriptor[], discard: boolean): number {
    const bytes = data.reduce((n, x) => n + x.length, 0);
    // The spec asks for IOERR where a request has more ranges than we said we take.
    if (bytes === 0 || bytes % RANGE_BYTES !== 0 || bytes > this.ranges.length)
      return VIRTIO_BLK_S_IOERR;
    let at = 0;
    for (const x of data) {
      memory.slice(x.address, x.length).copy(this.ranges, at);
      at += x.length;
    }
    const ranges: { position: number; length: number; unmap: boolean }[] = [];
    for (let off = 0; off < bytes; off += RANGE_BYTES) {
      const sector = this.ranges.readUInt32LE(off) + this.ranges.readUInt32LE(off + 4) * 2 ** 32;
      const count = this.ranges.readUInt32LE(off + 8);
      const flags = this.ranges.readUInt32LE(off + 12);
      // Unknown flags, and "unmap" on a discard, are for the device to refuse (5.2.6.2).
      if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (discard && flags !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (count > MAX_DISCARD_SECTORS || sector + count > this.spec.sectors)
        return VIRTIO_BLK_S_IOERR;
      ranges.push({
        position: sector * SECTOR,
        length: count * SECTOR,
        unmap: (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0,
      });
    }
    for (const r of ranges) {
      if (r.length === 0) continue;
      if (discard) this.punch(r.position, r.length);
      else this.zero(r.position, r.length, r.unmap);
    }
    this.count(discard ? DISCARDS : WRITE_ZEROES, 1);
    return VIRTIO_BLK_S_OK;
  }

  /** A discard is a hint: where the file system cannot punch holes, the data just stays. */
  private punch(position: number, length: number): void {
    try {
      fallocate(
        this.spec.fd,
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
        position,
        length,
        "discarding a range of a disk image",
      );
    } catch (err) {
      if (!(err instanceof SyscallError && err.code === "EOPNOTSUPP")) throw err;
    }
  }

  /**
   * Zeros on the disk: a hole where the driver lets us deallocate, else a zeroed range the
   * file system keeps allocated; where it has neither (EOPNOTSUPP), written zeros.
   */
  private zero(position: number, length: number, unmap: boolean): void {
    const modes = unmap
      ? [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]
      : [FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE];
    for (const mode of modes) {
      try {
        fallocate(this.spec.fd, mode, position, length, "zeroing a range of a disk image");
        return;
      } catch (err) {
        if (!(err instanceof SyscallError && err.code === "EOPNOTSUPP")) throw err;
      }
    }
    for (let done = 0; done < length; ) {
      const n = writeSync(
        this.spec.fd,
        ZEROS,
        0,
        Math.min(ZEROS.length, length - done),
        position + done,
      );
      if (n <= 0) throw new Error(`writing zeros wrote nothing at byte ${position + done}`);
      done += n;
    }
  }

  /**
   * Moves the data buffers' bytes from or to the file at `position` in one preadv/pwritev, on
   * host addresses of guest RAM. Returns the bytes moved.
   */
  private transfer(
    memory: GuestMemory,
    data: Descriptor[],
    position: number,
    direction: "read" | "write",
  ): number {
    // We offer seg_max = queue size - 2; a chain longer than one call takes is not a driver's.
    if (data.length > UIO_MAXIOV)
      throw new QueueError(`block request of ${data.length} buffers (at most ${UIO_MAXIOV})`);
    const io = this.io;
    io.clear();
    for (const d of data) io.add(memory.hostPointer(d.address, d.length), d.length);
    if (direction === "write") {
      io.writeAllAt(this.spec.fd, position);
    } else {
      const n = io.readAt(this.spec.fd, position);
      // Past the end of a sparse file reads as zeros, as a disk would.
      if (n < io.bytes) zeroAfter(memory, data, n);
    }
    return io.bytes;
  }

  /** Byte position of sector, or -1 when the request runs past the end of the disk. */
  private checkRange(sector: number, data: { length: number }[]): number {
    const bytes = data.reduce((n, x) => n + x.length, 0);
    if (bytes % SECTOR !== 0) return -1;
    if (!Number.isSafeInteger(sector) || sector + bytes / SECTOR > this.spec.sectors) return -1;
    return sector * SECTOR;
  }
}

/** Zeros the buffers after their first `bytes` bytes. */
function zeroAfter(memory: GuestMemory, buffers: Descriptor[], bytes: number): void {
  for (const b of buffers) {
    if (bytes < b.length) memory.slice(b.address, b.length).fill(0, Math.max(bytes, 0));
    bytes -= b.length;
  }
}
