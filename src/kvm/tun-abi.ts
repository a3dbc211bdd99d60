/**
 * TUN/TAP and virtio-net ABI: ioctl numbers, flags and layouts from <linux/if_tun.h>,
 * <linux/virtio_net.h> and <net/if.h>; checked against the headers by test/kvm/abi.test.ts.
 */
import type { Layout } from "./layouts.js";

const iow = (type: number, nr: number, size: number) =>
  ((1 << 30) | (size << 16) | (type << 8) | nr) >>> 0;
const T = "T".charCodeAt(0);

export const TUNSETIFF = iow(T, 202, 4);
export const TUNSETOFFLOAD = iow(T, 208, 4);
export const TUNSETVNETHDRSZ = iow(T, 216, 4);
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const IFNAMSIZ = 16;

/** <linux/virtio_net.h> */
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_S_LINK_UP = 1;

/** struct ifreq: the interface name, then a union whose first member we use is ifr_flags. */
export const ifreq: Layout = {
  c: "struct ifreq",
  size: 40,
  fields: { ifr_name: [0, 16], ifr_flags: [16, 2] },
};

/** The per-packet header with VIRTIO_F_VERSION_1 (virtio 1.2, 5.1.6). */
export const virtio_net_hdr_v1: Layout = {
  c: "struct virtio_net_hdr_v1",
  size: 12,
  fields: {
    flags: [0, 1],
    gso_type: [1, 1],
    hdr_len: [2, 2],
    gso_size: [4, 2],
    csum_start: [6, 2],
    csum_offset: [8, 2],
    num_buffers: [10, 2],
  },
};

/** struct virtio_net_config: only the fields we offer. */
export const virtio_net_config: Layout = {
  c: "struct virtio_net_config",
  size: 24,
  fields: { mac: [0, 6], status: [6, 2], max_virtqueue_pairs: [8, 2], mtu: [10, 2] },
};

export const TUN_CONSTANTS: Record<string, number> = {
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETVNETHDRSZ,
  IFF_TAP,
  IFF_NO_PI,
  IFF_VNET_HDR,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  IFNAMSIZ,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_S_LINK_UP,
};

export const TUN_LAYOUTS: Layout[] = [ifreq, virtio_net_hdr_v1, virtio_net_config];
export const TUN_HEADERS = ["net/if.h", "linux/if_tun.h", "linux/virtio_net.h"];
