import { randomFillSync } from "node:crypto";
import {
  VIRTIO_ID_RNG,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../../kvm/index.js";
import type { DeviceContext, VirtioDevice } from "../virtio/mmio-transport.js";

/**
 * virtio-rng (virtio 1.2, 5.4): fills every device-writable buffer with bytes from the
 * host's CSPRNG, so guests have entropy from their first instant.
 */
const QUEUE_SIZE = 64;
/** The most entropy one request gets: a guest cannot make us fill its whole RAM at once. */
const MAX_REQUEST = 64 * 1024;

export class VirtioRng implements VirtioDevice {
  readonly name = "rng";
  readonly deviceId = VIRTIO_ID_RNG;
  readonly features =
    (1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC)) | (1n << BigInt(VIRTIO_RING_F_EVENT_IDX));
  readonly queueSizes = [QUEUE_SIZE];
  private context: DeviceContext | null = null;
  private indirect = false;
  bytesServed = 0;

  readConfig(_offset: number, data: Buffer): void {
    data.fill(0);
  }

  writeConfig(): void {}

  activate(context: DeviceContext): void {
    this.context = context;
    this.indirect = (context.driverFeatures & (1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC))) !== 0n;
  }

  reset(): void {
    this.context = null;
  }

  notify(queue: number): void {
    const ctx = this.context;
    ctx?.serveQueue(queue, this.indirect, (chain) => {
      let written = 0;
      for (const d of chain.descriptors) {
        if (!d.writable || written >= MAX_REQUEST) continue;
        const n = Math.min(d.length, MAX_REQUEST - written);
        randomFillSync(ctx.memory.slice(d.address, n));
        written += n;
      }
      this.bytesServed += written;
      return written;
    });
  }
}
