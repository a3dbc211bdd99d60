import {
  ioctl,
  SyscallError,
  VHOST_VSOCK_SET_GUEST_CID,
  VHOST_VSOCK_SET_RUNNING,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_VSOCK,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../../kvm/index.js";
import type { DeviceContext, KernelQueues, VirtioDevice } from "../virtio/mmio-transport.js";
import { QueueError } from "../virtio/queue.js";
import { errnoCode, Vhost } from "./vhost.js";

/**
 * virtio-vsock (virtio 1.2, 5.10), the host-guest channel: sockets between the guest
 * (AF_VSOCK, its context id) and the node (context id 2), with no network in between. The
 * host kernel's vhost-vsock serves the rx and tx queues straight from guest memory; the VMM
 * only sets them up, so a byte never crosses this process. The event queue (transport resets
 * after a migration) stays with the VMM, which has no event to send.
 */
const RX = 0;
const TX = 1;
const QUEUE_SIZE = 128;
const DEVICE = "/dev/vhost-vsock";
/** Device feature bit 0 of virtio-vsock: SOCK_SEQPACKET sockets. */
const VIRTIO_VSOCK_F_SEQPACKET = 0;

export interface VsockOptions {
  /** The guest's context id: 3 or more, unique among the VMs of this host. */
  cid: number;
}

export class VsockError extends Error {
  constructor(
    message: string,
    readonly code: "no-vhost" | "cid-in-use" | "bad-cid" | "failed",
  ) {
    super(`vsock: ${message}`);
    this.name = "VsockError";
  }
}

/** Context ids 0 to 2 are the hypervisor's, local and the host's; -1 (u32) is "any". */
export const MIN_GUEST_CID = 3;
export const MAX_GUEST_CID = 0xffff_fffe;

export class VirtioVsock implements VirtioDevice {
  readonly name = "vsock";
  readonly deviceId = VIRTIO_ID_VSOCK;
  readonly features: bigint;
  readonly queueSizes = [QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE];
  readonly kernelQueues: readonly number[] = [RX, TX];
  readonly cid: number;
  private readonly vhost: Vhost;
  private fds: KernelQueues | null = null;
  private running = false;

  constructor(options: VsockOptions) {
    const { cid } = options;
    if (!Number.isInteger(cid) || cid < MIN_GUEST_CID || cid > MAX_GUEST_CID)
      throw new VsockError(
        `context id ${cid} is not one a guest may have (${MIN_GUEST_CID} to ${MAX_GUEST_CID})`,
        "bad-cid",
      );
    this.cid = cid;
    try {
      this.vhost = new Vhost(DEVICE);
    } catch (err) {
      const missing = errnoCode(err) === "ENOENT";
      throw new VsockError(
        missing ? `no ${DEVICE} on this host (modprobe vhost_vsock)` : (err as Error).message,
        missing ? "no-vhost" : "failed",
      );
    }
    // Only what both the kernel serves and this VMM understands: the kernel's other bits
    // (dirty logging, IOTLB) need VMM support we do not have.
    const wanted =
      (1n << BigInt(VIRTIO_F_VERSION_1)) |
      (1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC)) |
      (1n << BigInt(VIRTIO_RING_F_EVENT_IDX)) |
      (1n << BigInt(VIRTIO_VSOCK_F_SEQPACKET));
    this.features = this.vhost.features & wanted;
    try {
      const guestCid = Buffer.alloc(8);
      guestCid.writeBigUInt64LE(BigInt(cid));
      ioctl(this.vhost.fd, VHOST_VSOCK_SET_GUEST_CID, guestCid, "VHOST_VSOCK_SET_GUEST_CID");
    } catch (err) {
      this.vhost.close();
      if (errnoCode(err) === "EADDRINUSE")
        throw new VsockError(
          `context id ${cid} is in use by another VM on this host`,
          "cid-in-use",
        );
      throw new VsockError((err as Error).message, "failed");
    }
  }

  readConfig(offset: number, data: Buffer): void {
    const config = Buffer.alloc(8);
    config.writeBigUInt64LE(BigInt(this.cid));
    data.fill(0);
    if (offset >= 0 && offset < config.length) config.copy(data, 0, offset, offset + data.length);
  }

  writeConfig(): void {}

  attachKernelQueues(fds: KernelQueues): void {
    this.fds = fds;
  }

  /** Hands the rx and tx rings to vhost-vsock and starts it. */
  activate(context: DeviceContext): void {
    const fds = this.fds;
    if (!fds) throw new Error("vsock: activated before its queues' eventfds were attached");
    this.vhost.start(context, this.kernelQueues, fds);
    try {
      this.setRunning(true);
    } catch (err) {
      if (err instanceof SyscallError)
        throw new QueueError(`vhost-vsock did not start: ${err.message}`);
      throw err;
    }
  }

  private setRunning(on: boolean): void {
    const value = Buffer.alloc(4);
    value.writeInt32LE(on ? 1 : 0);
    ioctl(this.vhost.fd, VHOST_VSOCK_SET_RUNNING, value, "VHOST_VSOCK_SET_RUNNING");
    this.running = on;
  }

  notify(): void {
    // Only the event queue reaches the VMM; its buffers wait for an event that never comes.
  }

  reset(): void {
    if (this.running) this.setRunning(false);
  }

  close(): void {
    try {
      this.reset();
    } finally {
      this.vhost.close();
    }
  }
}
