import { fsyncSync, readvSync, writevSync } from "node:fs";
import {
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
import { type Chain, QueueError } from "../virtio/queue.js";

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
    const sector = header.readBigUInt64LE(8);
    const data = d.slice(i, d.length - 1);
    const status = memory.slice(statusDesc.address, 1);
    let written = 0;
    let result = VIRTIO_BLK_S_OK;
    try {
      switch (type) {
        case VIRTIO_BLK_T_IN: {
          if (data.some((x) => !x.writable))
            throw new QueueError("read request with a read-only data buffer");
          let position = this.checkRange(sector, data);
          if (position < 0) {
            result = VIRTIO_BLK_S_IOERR;
            break;
          }
          // One preadv per request (per IOV_MAX buffers), not one pread per buffer.
          for (const batch of batches(data.map((x) => memory.slice(x.address, x.length)))) {
            const want = batch.reduce((n, b) => n + b.length, 0);
            let n = readvSync(this.spec.fd, batch, position);
            // Past the end of a sparse file reads as zeros, as a disk would.
            for (const b of batch) {
              if (n < b.length) b.fill(0, Math.max(n, 0));
              n -= b.length;
            }
            position += want;
            written += want;
          }
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
          let position = this.checkRange(sector, data);
          if (position < 0) {
            result = VIRTIO_BLK_S_IOERR;
            break;
          }
          for (const batch of batches(data.map((x) => memory.slice(x.address, x.length)))) {
            const want = batch.reduce((n, b) => n + b.length, 0);
            let done = 0;
            // pwritev may write less than asked (a signal, a full file system): go on after it.
            while (done < want) {
              const rest = skip(batch, done);
              const n = writevSync(this.spec.fd, rest, position + done);
              if (n <= 0) throw new Error(`pwritev wrote nothing at byte ${position + done}`);
              done += n;
            }
            position += want;
            this.count(BYTES_WRITTEN, want);
          }
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

  /** Byte position of sector, or -1 when the request runs past the end of the disk. */
  private checkRange(sector: bigint, data: { length: number }[]): number {
    const bytes = data.reduce((n, x) => n + x.length, 0);
    if (bytes % SECTOR !== 0) return -1;
    const end = sector + BigInt(bytes / SECTOR);
    if (end > BigInt(this.spec.sectors)) return -1;
    return Number(sector) * SECTOR;
  }
}

/** Linux takes at most IOV_MAX (1024) buffers per preadv/pwritev. */
const IOV_MAX = 1024;

function batches(buffers: Buffer[]): Buffer[][] {
  const out: Buffer[][] = [];
  for (let i = 0; i < buffers.length; i += IOV_MAX) out.push(buffers.slice(i, i + IOV_MAX));
  return out;
}

/** The buffers after their first `bytes` bytes. */
function skip(buffers: Buffer[], bytes: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of buffers) {
    if (bytes >= b.length) {
      bytes -= b.length;
      continue;
    }
    out.push(bytes > 0 ? b.subarray(bytes) : b);
    bytes = 0;
  }
  return out;
}
