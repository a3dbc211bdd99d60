import {
  close,
  ioctl,
  ioctlValue,
  O_RDWR,
  open,
  Struct,
  SyscallError,
  VHOST_GET_FEATURES,
  VHOST_SET_FEATURES,
  VHOST_SET_MEM_TABLE,
  VHOST_SET_OWNER,
  VHOST_SET_VRING_ADDR,
  VHOST_SET_VRING_BASE,
  VHOST_SET_VRING_CALL,
  VHOST_SET_VRING_KICK,
  VHOST_SET_VRING_NUM,
  vhost_memory,
  vhost_memory_region,
  vhost_vring_addr,
  vhost_vring_file,
  vhost_vring_state,
} from "../../kvm/index.js";
import type { GuestMemory } from "../guest-memory.js";
import type { DeviceContext, KernelQueues } from "../virtio/mmio-transport.js";
import { QueueError, type Virtqueue } from "../virtio/queue.js";

/**
 * One vhost device (/dev/vhost-net, /dev/vhost-vsock): the host kernel serves virtqueues in
 * guest memory, which the VMM describes once (its memory table and each ring's addresses in
 * this process), and is kicked and signals through the VM's ioeventfds and irqfd. What is
 * common to every vhost device; each device adds its own backend ioctls.
 */
export class Vhost {
  readonly fd: number;
  /** The virtio feature bits this kernel's device serves. */
  readonly features: bigint;

  /** Opens and owns the device; a SyscallError (ENOENT when it is missing) otherwise. */
  constructor(readonly path: string) {
    this.fd = open(path, O_RDWR, `opening ${path}`);
    try {
      ioctlValue(this.fd, VHOST_SET_OWNER, 0, "VHOST_SET_OWNER");
      const features = Buffer.alloc(8);
      ioctl(this.fd, VHOST_GET_FEATURES, features, "VHOST_GET_FEATURES");
      this.features = features.readBigUInt64LE(0);
    } catch (err) {
      close(this.fd);
      throw err;
    }
  }

  /**
   * Hands the rings `indexes` of a device the driver just made live to the kernel: the
   * negotiated features (only those it serves), all of guest RAM, then each ring's size,
   * start, addresses, kick and call eventfds. The VMM checked the rings lie in guest RAM;
   * anything the kernel still refuses is the guest's doing, so it is a QueueError: the device
   * needs a reset, the VM goes on.
   */
  start(context: DeviceContext, indexes: readonly number[], fds: KernelQueues): void {
    try {
      const features = Buffer.alloc(8);
      features.writeBigUInt64LE(context.driverFeatures & this.features);
      ioctl(this.fd, VHOST_SET_FEATURES, features, "VHOST_SET_FEATURES");
      ioctl(this.fd, VHOST_SET_MEM_TABLE, memoryTable(context.memory), "VHOST_SET_MEM_TABLE");
      for (const index of indexes) {
        const queue = context.queues[index];
        if (!queue?.ready) throw new QueueError(`queue ${index} is not ready`);
        this.setRing(index, queue, context.memory, fds);
      }
    } catch (err) {
      if (err instanceof SyscallError)
        throw new QueueError(`${this.path} refused the rings: ${err.message}`);
      throw err;
    }
  }

  private setRing(index: number, queue: Virtqueue, memory: GuestMemory, fds: KernelQueues): void {
    const state = new Struct(vhost_vring_state);
    state.set("index", index);
    state.set("num", queue.size);
    ioctl(this.fd, VHOST_SET_VRING_NUM, state.buf, "VHOST_SET_VRING_NUM");
    // A fresh ring starts at index 0: the driver has made nothing available yet.
    state.set("num", 0);
    ioctl(this.fd, VHOST_SET_VRING_BASE, state.buf, "VHOST_SET_VRING_BASE");
    const { descriptors, available, used } = queue.areas();
    const addr = new Struct(vhost_vring_addr);
    addr.set("index", index);
    addr.set("desc_user_addr", memory.hostAddress(...descriptors));
    addr.set("avail_user_addr", memory.hostAddress(...available));
    addr.set("used_user_addr", memory.hostAddress(...used));
    ioctl(this.fd, VHOST_SET_VRING_ADDR, addr.buf, "VHOST_SET_VRING_ADDR");
    this.setRingFile(VHOST_SET_VRING_KICK, index, fds.kicks[index] ?? -1, "VHOST_SET_VRING_KICK");
    this.setRingFile(VHOST_SET_VRING_CALL, index, fds.call, "VHOST_SET_VRING_CALL");
  }

  /** An ioctl that takes a struct vhost_vring_file (a backend per ring). */
  setRingFile(request: number, index: number, fd: number, what: string): void {
    const file = new Struct(vhost_vring_file);
    file.set("index", index);
    file.set("fd", fd);
    ioctl(this.fd, request, file.buf, what);
  }

  close(): void {
    close(this.fd);
  }
}

/** The error code of a failed system call, or "". */
export function errnoCode(err: unknown): string {
  return err instanceof SyscallError ? err.code : "";
}

/** struct vhost_memory with every region of guest RAM. */
function memoryTable(memory: GuestMemory): Buffer {
  const table = Buffer.alloc(vhost_memory.size + memory.regions.length * vhost_memory_region.size);
  new Struct(vhost_memory, table).set("nregions", memory.regions.length);
  memory.regions.forEach((region, i) => {
    const r = new Struct(
      vhost_memory_region,
      table,
      vhost_memory.size + i * vhost_memory_region.size,
    );
    r.set("guest_phys_addr", BigInt(region.guestAddress));
    r.set("memory_size", BigInt(region.size));
    r.set("userspace_addr", region.hostAddress);
  });
  return table;
}
