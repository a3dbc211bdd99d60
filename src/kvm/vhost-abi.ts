/**
 * vhost and virtio-vsock ABI: ioctl numbers and layouts from <linux/vhost.h>,
 * <linux/vhost_types.h> and <linux/virtio_vsock.h>; checked against the headers by
 * test/kvm/abi.test.ts. vhost lets the host kernel serve a device's virtqueues directly in
 * guest memory: the VMM describes the memory and the rings once, then stays out of the data
 * path.
 */
import type { Layout } from "./layouts.js";

const VHOST_VIRTIO = 0xaf;
const io = (nr: number) => ((VHOST_VIRTIO << 8) | nr) >>> 0;
const iow = (nr: number, size: number) =>
  ((1 << 30) | (size << 16) | (VHOST_VIRTIO << 8) | nr) >>> 0;
const ior = (nr: number, size: number) =>
  ((2 << 30) | (size << 16) | (VHOST_VIRTIO << 8) | nr) >>> 0;
const iowr = (nr: number, size: number) =>
  ((3 << 30) | (size << 16) | (VHOST_VIRTIO << 8) | nr) >>> 0;

/** struct vhost_memory_region: one range of guest RAM and where the VMM has it mapped. */
export const vhost_memory_region: Layout = {
  c: "struct vhost_memory_region",
  size: 32,
  fields: {
    guest_phys_addr: [0, 8],
    memory_size: [8, 8],
    userspace_addr: [16, 8],
    flags_padding: [24, 8],
  },
};

/** struct vhost_memory: a count, then that many regions (a flexible array). */
export const vhost_memory: Layout = {
  c: "struct vhost_memory",
  size: 8,
  fields: { nregions: [0, 4], padding: [4, 4], regions: [8, 0] },
};

export const vhost_vring_state: Layout = {
  c: "struct vhost_vring_state",
  size: 8,
  fields: { index: [0, 4], num: [4, 4] },
};

export const vhost_vring_file: Layout = {
  c: "struct vhost_vring_file",
  size: 8,
  fields: { index: [0, 4], fd: [4, 4] },
};

/** The rings' addresses are the VMM's own (userspace) addresses, not guest addresses. */
export const vhost_vring_addr: Layout = {
  c: "struct vhost_vring_addr",
  size: 40,
  fields: {
    index: [0, 4],
    flags: [4, 4],
    desc_user_addr: [8, 8],
    used_user_addr: [16, 8],
    avail_user_addr: [24, 8],
    log_guest_addr: [32, 8],
  },
};

export const VHOST_GET_FEATURES = ior(0x00, 8);
export const VHOST_SET_FEATURES = iow(0x00, 8);
export const VHOST_SET_OWNER = io(0x01);
export const VHOST_SET_MEM_TABLE = iow(0x03, vhost_memory.size);
export const VHOST_SET_VRING_NUM = iow(0x10, vhost_vring_state.size);
export const VHOST_SET_VRING_ADDR = iow(0x11, vhost_vring_addr.size);
export const VHOST_SET_VRING_BASE = iow(0x12, vhost_vring_state.size);
export const VHOST_GET_VRING_BASE = iowr(0x12, vhost_vring_state.size);
export const VHOST_SET_VRING_KICK = iow(0x20, vhost_vring_file.size);
export const VHOST_SET_VRING_CALL = iow(0x21, vhost_vring_file.size);
/** vhost-net: the tap (any socket) a ring moves frames to and from; fd -1 detaches it. */
export const VHOST_NET_SET_BACKEND = iow(0x30, vhost_vring_file.size);
export const VHOST_VSOCK_SET_GUEST_CID = iow(0x60, 8);
export const VHOST_VSOCK_SET_RUNNING = iow(0x61, 4);

/** <linux/virtio_vsock.h>: the device's configuration is the guest's context id (le64). */
export const virtio_vsock_config: Layout = {
  c: "struct virtio_vsock_config",
  size: 8,
  fields: { guest_cid: [0, 8] },
};

/** <linux/vm_sockets.h>: context ids below 3 are the hypervisor's, the host's and local. */
export const VMADDR_CID_HOST = 2;

export const VHOST_CONSTANTS: Record<string, number> = {
  VHOST_GET_FEATURES,
  VHOST_SET_FEATURES,
  VHOST_SET_OWNER,
  VHOST_SET_MEM_TABLE,
  VHOST_SET_VRING_NUM,
  VHOST_SET_VRING_ADDR,
  VHOST_SET_VRING_BASE,
  VHOST_GET_VRING_BASE,
  VHOST_SET_VRING_KICK,
  VHOST_SET_VRING_CALL,
  VHOST_NET_SET_BACKEND,
  VHOST_VSOCK_SET_GUEST_CID,
  VHOST_VSOCK_SET_RUNNING,
  VMADDR_CID_HOST,
};

export const VHOST_LAYOUTS: Layout[] = [
  vhost_memory_region,
  vhost_memory,
  vhost_vring_state,
  vhost_vring_file,
  vhost_vring_addr,
  virtio_vsock_config,
];
export const VHOST_HEADERS = ["linux/vhost.h", "linux/virtio_vsock.h", "linux/vm_sockets.h"];
