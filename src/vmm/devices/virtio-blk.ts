import { closeSync, fstatSync, fsyncSync, openSync, readvSync, writevSync } from "node:fs";
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_ID_BLOCK,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../../kvm/index.js";
import type { DeviceContext, VirtioDevice } from "../virtio/mmio-transport.js";
import { type Chain, QueueError } from "../virtio/queue.js";

/**
 * virtio-blk on a raw image file (virtio 1.2, 5.2): read, write, flush and get-id. The file
 * stays sparse: only what the guest writes takes space. Requests run synchronously on the
 * VMM's main thread; the vCPU that notified waits for them anyway.
 */

export class DiskError extends Error {
  constructor(path: string, message: string) {
    super(`disk ${path}: ${message}`);
    this.name = "DiskError";
  }
}

const SECTOR = 512;
const QUEUE_SIZE = 256;
const HEADER_BYTES = 16;

export interface BlockOptions {
  path: string;
  readOnly?: boolean;
  /** Up to 20 bytes the guest reads with GET_ID (a serial number). */
  id?: string;
}

export class VirtioBlock implements VirtioDevice {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly features: bigint;
  readonly queueSizes = [QUEUE_SIZE];
  readonly sectors: bigint;
  private readonly fd: number;
  private readonly config = Buffer.alloc(24);
  private context: DeviceContext | null = null;
  private indirect = false;
  readonly stats = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };

  constructor(private readonly options: BlockOptions) {
    this.name = `blk ${options.path}`;
    try {
      this.fd = openSync(options.path, options.readOnly ? "r" : "r+");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new DiskError(
        options.path,
        code === "ENOENT" ? "no such file" : (err as Error).message,
      );
    }
    const size = fstatSync(this.fd).size;
    if (size % SECTOR !== 0) {
      closeSync(this.fd);
      throw new DiskError(options.path, `size ${size} is not a multiple of ${SECTOR} bytes`);
    }
    this.sectors = BigInt(size / SECTOR);
    let features =
      bit(VIRTIO_BLK_F_FLUSH) |
      bit(VIRTIO_BLK_F_SEG_MAX) |
      bit(VIRTIO_BLK_F_BLK_SIZE) |
      bit(VIRTIO_RING_F_INDIRECT_DESC);
    if (options.readOnly) features |= bit(VIRTIO_BLK_F_RO);
    this.features = features;
    // struct virtio_blk_config: capacity, size_max, seg_max, geometry, blk_size.
    this.config.writeBigUInt64LE(this.sectors, 0);
    this.config.writeUInt32LE(QUEUE_SIZE - 2, 12);
    this.config.writeUInt32LE(SECTOR, 20);
  }

  readConfig(offset: number, data: Buffer): void {
    data.fill(0);
    if (offset >= 0 && offset + data.length <= this.config.length) {
      this.config.copy(data, 0, offset, offset + data.length);
    }
  }

  writeConfig(): void {
    // The block config is read-only for the driver.
  }

  activate(context: DeviceContext): void {
    this.context = context;
    this.indirect = (context.driverFeatures & bit(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n;
  }

  reset(): void {
    this.context = null;
  }

  notify(queue: number): void {
    const ctx = this.context;
    ctx?.serveQueue(queue, this.indirect, (chain) => this.serve(ctx, chain));
  }

  /** One request; returns how many bytes were written into the guest's buffers. */
  private serve(ctx: DeviceContext, chain: Chain): number {
    const d = chain.descriptors;
    const statusDesc = d[d.length - 1];
    if (!statusDesc?.writable || statusDesc.length < 1 || d.length < 2) {
      throw new QueueError("block request without a writable status byte at its end");
    }
    const header = Buffer.alloc(HEADER_BYTES);
    let got = 0;
    let i = 0;
    for (; i < d.length - 1 && got < HEADER_BYTES; i++) {
      const desc = d[i];
      if (!desc || desc.writable) break;
      const take = Math.min(desc.length, HEADER_BYTES - got);
      ctx.memory.slice(desc.address, take).copy(header, got);
      got += take;
      if (take < desc.length)
        throw new QueueError("block request header shares a buffer with data");
    }
    if (got < HEADER_BYTES) throw new QueueError("block request header is shorter than 16 bytes");
    const type = header.readUInt32LE(0);
    const sector = header.readBigUInt64LE(8);
    const data = d.slice(i, d.length - 1);
    const status = ctx.memory.slice(statusDesc.address, 1);
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
          for (const batch of batches(data.map((x) => ctx.memory.slice(x.address, x.length)))) {
            const want = batch.reduce((n, b) => n + b.length, 0);
            let n = readvSync(this.fd, batch, position);
            // Past the end of a sparse file reads as zeros, as a disk would.
            for (const b of batch) {
              if (n < b.length) b.fill(0, Math.max(n, 0));
              n -= b.length;
            }
            position += want;
            written += want;
          }
          this.stats.reads++;
          this.stats.bytesRead += written;
          break;
        }
        case VIRTIO_BLK_T_OUT: {
          if (data.some((x) => x.writable))
            throw new QueueError("write request with a writable data buffer");
          if (this.options.readOnly) {
            result = VIRTIO_BLK_S_IOERR;
            break;
          }
          let position = this.checkRange(sector, data);
          if (position < 0) {
            result = VIRTIO_BLK_S_IOERR;
            break;
          }
          for (const batch of batches(data.map((x) => ctx.memory.slice(x.address, x.length)))) {
            const want = batch.reduce((n, b) => n + b.length, 0);
            let done = 0;
            // pwritev may write less than asked (a signal, a full file system): go on after it.
            while (done < want) {
              const rest = skip(batch, done);
              const n = writevSync(this.fd, rest, position + done);
              if (n <= 0) throw new Error(`pwritev wrote nothing at byte ${position + done}`);
              done += n;
            }
            position += want;
            this.stats.bytesWritten += want;
          }
          this.stats.writes++;
          break;
        }
        case VIRTIO_BLK_T_FLUSH:
          if (!this.options.readOnly) fsyncSync(this.fd);
          this.stats.flushes++;
          break;
        case VIRTIO_BLK_T_GET_ID: {
          const id = Buffer.alloc(VIRTIO_BLK_ID_BYTES);
          id.write(this.options.id ?? "", "latin1");
          let at = 0;
          for (const x of data) {
            if (!x.writable) continue;
            const n = Math.min(x.length, id.length - at);
            id.copy(ctx.memory.slice(x.address, n), 0, at, at + n);
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
      this.stats.errors++;
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
    if (end > this.sectors) return -1;
    return Number(sector) * SECTOR;
  }

  close(): void {
    closeSync(this.fd);
  }
}

function bit(n: number): bigint {
  return 1n << BigInt(n);
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
