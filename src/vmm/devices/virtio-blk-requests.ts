import { fsyncSync } from "node:fs";
import {
  UIO_MAXIOV,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
} from "../../kvm/index.js";
import type { GuestMemory } from "../guest-memory.js";
import { IoVectors } from "../io-vectors.js";
import { type Chain, type Descriptor, QueueError } from "../virtio/queue.js";

/**
 * virtio-blk's requests (virtio 1.2, 5.2.6) on a raw image file: read, write, flush and
 * get-id. Plain data in, so that the VMM's main thread or a queue thread of the device's own
 * (QueueThread) can serve them alike; the counters live in shared memory for the same reason.
 */

export const SECTOR = 512;
const HEADER_BYTES = 16;

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

const STAT_NAMES = ["reads", "writes", "flushes", "bytesRead", "bytesWritten", "errors"] as const;
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

export class BlockRequests {
  private readonly counters: Float64Array;
  private readonly header = Buffer.alloc(HEADER_BYTES);
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
