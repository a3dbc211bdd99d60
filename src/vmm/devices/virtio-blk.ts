import { closeSync, fstatSync, openSync } from "node:fs";
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_ID_BLOCK,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  virtio_blk_config,
} from "../../kvm/index.js";
import type { DeviceContext, VirtioDevice } from "../virtio/mmio-transport.js";
import type { QueueThreadDevice } from "../virtio/queue-thread.js";
import {
  BlockRequests,
  type BlockRequestsSpec,
  type BlockStats,
  blockStatsBuffer,
  DISCARD_ALIGNMENT_SECTORS,
  MAX_DISCARD_SECTORS,
  MAX_DISCARD_SEGMENTS,
  readBlockStats,
  SECTOR,
} from "./virtio-blk-requests.js";

/**
 * virtio-blk on a raw image file (virtio 1.2, 5.2): read, write, flush, get-id, and on a
 * writable disk discard and write-zeroes. The file stays sparse: only what the guest writes
 * takes space, and what it discards gives the space back. In a VM its requests are served on a
 * queue thread of its own (QueueThread, given by useQueueThread()); on its own (the tests
 * that drive a transport directly) on the calling thread, synchronously.
 */

export class DiskError extends Error {
  constructor(path: string, message: string) {
    super(`disk ${path}: ${message}`);
    this.name = "DiskError";
  }
}

const QUEUE_SIZE = 256;

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
  /** struct virtio_blk_config up to write_zeroes_may_unmap and its padding. */
  private readonly config = Buffer.alloc(60);
  private readonly statsBuffer = blockStatsBuffer();
  private readonly requests: BlockRequests;
  private context: DeviceContext | null = null;
  private indirect = false;
  private thread: QueueThreadDevice | null = null;

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
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      bit(VIRTIO_RING_F_EVENT_IDX);
    if (options.readOnly) features |= bit(VIRTIO_BLK_F_RO);
    else features |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
    this.features = features;
    const at = (field: keyof typeof virtio_blk_config.fields) => virtio_blk_config.fields[field][0];
    this.config.writeBigUInt64LE(this.sectors, at("capacity"));
    this.config.writeUInt32LE(QUEUE_SIZE - 2, at("seg_max"));
    this.config.writeUInt32LE(SECTOR, at("blk_size"));
    this.config.writeUInt32LE(MAX_DISCARD_SECTORS, at("max_discard_sectors"));
    this.config.writeUInt32LE(MAX_DISCARD_SEGMENTS, at("max_discard_seg"));
    this.config.writeUInt32LE(DISCARD_ALIGNMENT_SECTORS, at("discard_sector_alignment"));
    this.config.writeUInt32LE(MAX_DISCARD_SECTORS, at("max_write_zeroes_sectors"));
    this.config.writeUInt32LE(MAX_DISCARD_SEGMENTS, at("max_write_zeroes_seg"));
    this.config.writeUInt8(1, at("write_zeroes_may_unmap"));
    this.requests = new BlockRequests(this.queueThreadSpec());
  }

  get stats(): BlockStats {
    return readBlockStats(this.statsBuffer);
  }

  /** What a queue thread needs to serve this disk's requests. */
  queueThreadSpec(): BlockRequestsSpec {
    return {
      kind: "blk",
      fd: this.fd,
      sectors: Number(this.sectors),
      readOnly: this.options.readOnly === true,
      id: this.options.id ?? "",
      stats: this.statsBuffer,
    };
  }

  /** From now on the thread serves the requests; this object keeps registers and config. */
  useQueueThread(thread: QueueThreadDevice): void {
    this.thread = thread;
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
    this.thread?.activate(context.queues, this.indirect);
  }

  reset(): void {
    this.thread?.deactivate();
    this.context = null;
  }

  notify(queue: number): void {
    if (this.thread) {
      this.thread.kick();
      return;
    }
    const ctx = this.context;
    ctx?.serveQueue(queue, this.indirect, (chain) => this.requests.serve(ctx.memory, chain));
  }

  close(): void {
    // The VM has stopped the queue thread first: it no longer touches the file.
    closeSync(this.fd);
  }
}

function bit(n: number): bigint {
  return 1n << BigInt(n);
}
