import { existsSync } from "node:fs";
import {
  readRaw,
  SyscallError,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  VHOST_NET_SET_BACKEND,
  VIRTIO_ID_NET,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  virtio_net_hdr_v1,
  writeRaw,
} from "../../kvm/index.js";
import type { FdWatcher } from "../fd-watcher.js";
import type { DeviceContext, KernelQueues, VirtioDevice } from "../virtio/mmio-transport.js";
import { gatherReadable, QueueError } from "../virtio/queue.js";
import { Tap } from "./tap.js";
import { Vhost } from "./vhost.js";

/**
 * virtio-net on a tap device (virtio 1.2, 5.1). The tap speaks the same 12-byte
 * virtio_net_hdr_v1 as the guest, so headers pass through untouched and checksum and
 * segmentation offloads work end to end once negotiated. Where the host has /dev/vhost-net,
 * the kernel moves the frames between the rings and the tap (vhost-net, the tap as backend of
 * both rings); elsewhere, and with `vhost: false`, the VMM does, from its event loop.
 */

const RX = 0;
const TX = 1;
const QUEUE_SIZE = 256;
/** The largest frame a tap hands over with TSO: 64 KiB of payload plus headers. */
const MAX_FRAME = 65_562 + virtio_net_hdr_v1.size;
const EAGAIN = 11;
const NUM_BUFFERS_OFFSET = virtio_net_hdr_v1.fields.num_buffers?.[0] ?? 10;

export interface NicOptions {
  /** Host tap interface name; empty lets the kernel pick one (see .tapName). */
  tap: string;
  /** aa:bb:cc:dd:ee:ff; a locally administered one is made up when absent. */
  mac?: string;
  /**
   * Let the host kernel's vhost-net move the frames when /dev/vhost-net exists (the default):
   * no VM exit and no copy through this process per frame. false keeps them in the VMM.
   */
  vhost?: boolean;
}

const VHOST_NET = "/dev/vhost-net";

export class NicConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NicConfigError";
  }
}

export class VirtioNet implements VirtioDevice {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_NET;
  readonly features: bigint;
  readonly queueSizes = [QUEUE_SIZE, QUEUE_SIZE];
  readonly mac: Buffer;
  private readonly tap: Tap;
  private readonly config = Buffer.alloc(12);
  private context: DeviceContext | null = null;
  private indirect = false;
  private watching = false;
  private readonly frame = Buffer.alloc(MAX_FRAME);
  readonly stats = { rxFrames: 0, txFrames: 0, rxDropped: 0, txDropped: 0, rxBytes: 0, txBytes: 0 };
  /** vhost-net when the kernel carries the frames (the VMM's stats then stay at zero). */
  private readonly vhost: Vhost | null = null;
  readonly kernelQueues?: readonly number[];
  /** Who moves the frames, and why not the kernel when it is the VMM. */
  readonly dataPath: string;
  /** The tap did not exist, and this VMM made it (see Tap.created). */
  get madeTap(): boolean {
    return this.tap.created;
  }
  private fds: KernelQueues | null = null;
  private backendSet = false;

  constructor(
    options: NicOptions,
    private readonly watcher: FdWatcher,
  ) {
    this.mac = parseMac(options.mac);
    this.tap = new Tap(options.tap, virtio_net_hdr_v1.size);
    this.name = `net ${this.tap.name}`;
    const bit = (n: number) => 1n << BigInt(n);
    this.features =
      bit(VIRTIO_NET_F_MAC) |
      bit(VIRTIO_NET_F_STATUS) |
      bit(VIRTIO_NET_F_CSUM) |
      bit(VIRTIO_NET_F_GUEST_CSUM) |
      bit(VIRTIO_NET_F_GUEST_TSO4) |
      bit(VIRTIO_NET_F_GUEST_TSO6) |
      bit(VIRTIO_NET_F_HOST_TSO4) |
      bit(VIRTIO_NET_F_HOST_TSO6) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      bit(VIRTIO_RING_F_EVENT_IDX);
    this.mac.copy(this.config, 0);
    this.config.writeUInt16LE(VIRTIO_NET_S_LINK_UP, 6);
    if (options.vhost === false) this.dataPath = "the VMM (vhost off in the config)";
    else if (!existsSync(VHOST_NET)) this.dataPath = `the VMM (no ${VHOST_NET} on this host)`;
    else {
      try {
        this.vhost = new Vhost(VHOST_NET);
        this.kernelQueues = [RX, TX];
        this.dataPath = "vhost-net";
        // The ring features are the kernel's now: offer only those it serves. The offloads are
        // the tap's, as before.
        for (const ring of [bit(VIRTIO_RING_F_INDIRECT_DESC), bit(VIRTIO_RING_F_EVENT_IDX)])
          if (!(this.vhost.features & ring)) this.features &= ~ring;
      } catch (err) {
        this.dataPath = `the VMM (${VHOST_NET}: ${(err as Error).message})`;
      }
    }
  }

  attachKernelQueues(fds: KernelQueues): void {
    this.fds = fds;
  }

  get tapName(): string {
    return this.tap.name;
  }

  readConfig(offset: number, data: Buffer): void {
    data.fill(0);
    if (offset >= 0 && offset + data.length <= this.config.length) {
      this.config.copy(data, 0, offset, offset + data.length);
    }
  }

  writeConfig(): void {}

  activate(context: DeviceContext): void {
    this.context = context;
    const has = (n: number) => (context.driverFeatures & (1n << BigInt(n))) !== 0n;
    this.indirect = has(VIRTIO_RING_F_INDIRECT_DESC);
    // The tap may only hand the guest what the guest said it can take.
    let offload = 0;
    if (has(VIRTIO_NET_F_GUEST_CSUM)) {
      offload |= TUN_F_CSUM;
      if (has(VIRTIO_NET_F_GUEST_TSO4)) offload |= TUN_F_TSO4;
      if (has(VIRTIO_NET_F_GUEST_TSO6)) offload |= TUN_F_TSO6;
    }
    this.tap.setOffload(offload);
    if (this.vhost) this.startVhost(this.vhost, context);
    else this.resumeRx();
  }

  /** Hands both rings to vhost-net with the tap as their backend. */
  private startVhost(vhost: Vhost, context: DeviceContext): void {
    const fds = this.fds;
    if (!fds) throw new Error(`${this.name}: activated before its queues' eventfds were attached`);
    vhost.start(context, [RX, TX], fds);
    try {
      for (const index of [RX, TX])
        vhost.setRingFile(VHOST_NET_SET_BACKEND, index, this.tap.fd, "VHOST_NET_SET_BACKEND");
    } catch (err) {
      if (err instanceof SyscallError)
        throw new QueueError(`vhost-net took no backend: ${err.message}`);
      throw err;
    }
    this.backendSet = true;
  }

  reset(): void {
    this.context = null;
    this.pauseRx();
    if (this.vhost && this.backendSet) {
      this.backendSet = false;
      for (const index of [RX, TX])
        this.vhost.setRingFile(VHOST_NET_SET_BACKEND, index, -1, "VHOST_NET_SET_BACKEND");
    }
  }

  notify(queue: number): void {
    if (queue === TX) this.transmit();
    else if (queue === RX) this.resumeRx();
  }

  private transmit(): void {
    const ctx = this.context;
    ctx?.serveQueue(TX, this.indirect, (chain) => {
      const packet = gatherReadable(ctx.memory, chain, MAX_FRAME);
      if (packet.length > virtio_net_hdr_v1.size) {
        if (writeRaw(this.tap.fd, packet) < 0) this.stats.txDropped++;
        else {
          this.stats.txFrames++;
          this.stats.txBytes += packet.length - virtio_net_hdr_v1.size;
        }
      }
      return 0;
    });
  }

  /** Moves frames from the tap into receive buffers while the guest has some. */
  private receive(): void {
    const ctx = this.context;
    const q = ctx?.queues[RX];
    if (!ctx || !q) return;
    let served = 0;
    while (q.hasAvailable(ctx.memory)) {
      const n = readRaw(this.tap.fd, this.frame);
      if (n === -EAGAIN) break;
      if (n < 0) {
        // The tap went away (deleted on the host): nothing more will come.
        this.pauseRx();
        break;
      }
      const chain = q.pop(ctx.memory, this.indirect);
      if (!chain) break;
      // Without MRG_RXBUF a frame fills one chain, and num_buffers must say 1.
      this.frame.writeUInt16LE(1, NUM_BUFFERS_OFFSET);
      let copied = 0;
      for (const d of chain.descriptors) {
        if (!d.writable || copied >= n) continue;
        const take = Math.min(d.length, n - copied);
        this.frame.copy(ctx.memory.slice(d.address, take), 0, copied, copied + take);
        copied += take;
      }
      if (copied < n) {
        // Buffers too small for this frame: give them back empty, the driver drops it.
        this.stats.rxDropped++;
        q.pushUsed(ctx.memory, chain.head, 0);
      } else {
        this.stats.rxFrames++;
        this.stats.rxBytes += n - virtio_net_hdr_v1.size;
        q.pushUsed(ctx.memory, chain.head, n);
      }
      served++;
    }
    if (served) ctx.signalUsed(RX);
    // No buffers left: stop watching the tap until the driver adds some (it notifies RX;
    // armNotify asks it to, with event indexes, and catches buffers added meanwhile).
    if (!q.armNotify(ctx.memory)) this.pauseRx();
  }

  private resumeRx(): void {
    if (this.watching || !this.context) return;
    this.watching = true;
    this.watcher.watch(this.tap.fd, () => {
      try {
        this.receive();
      } catch (err) {
        this.pauseRx();
        this.context?.fail(err);
      }
    });
  }

  private pauseRx(): void {
    if (!this.watching) return;
    this.watching = false;
    this.watcher.unwatch(this.tap.fd);
  }

  close(): void {
    try {
      this.reset();
    } finally {
      this.vhost?.close();
      this.tap.close();
    }
  }
}

function parseMac(mac: string | undefined): Buffer {
  if (mac === undefined) {
    const b = Buffer.alloc(6);
    crypto.getRandomValues(b);
    // Locally administered, unicast.
    b[0] = ((b[0] ?? 0) & 0xfe) | 0x02;
    return b;
  }
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) {
    throw new NicConfigError(`"${mac}" is not a MAC address like 02:00:00:00:00:01`);
  }
  const b = Buffer.from(mac.split(":").map((x) => Number.parseInt(x, 16)));
  if ((b[0] ?? 0) & 1) throw new NicConfigError(`${mac} is a multicast address`);
  return b;
}
