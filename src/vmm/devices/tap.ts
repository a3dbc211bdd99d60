import {
  close,
  IFF_NO_PI,
  IFF_TAP,
  IFF_VNET_HDR,
  IFNAMSIZ,
  ifreq,
  ioctl,
  ioctlValue,
  O_NONBLOCK,
  O_RDWR,
  open,
  Struct,
  SyscallError,
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETVNETHDRSZ,
} from "../../kvm/index.js";

/** A tap device: Ethernet frames in and out of the host, each with a virtio-net header. */

export class TapError extends Error {
  constructor(
    readonly tap: string,
    message: string,
    readonly code: "in-use" | "permission" | "bad-name" | "failed",
  ) {
    super(`tap ${tap}: ${message}`);
    this.name = "TapError";
  }
}

export class Tap {
  readonly fd: number;
  readonly name: string;

  constructor(name: string, vnetHeaderBytes: number) {
    if (Buffer.byteLength(name) >= IFNAMSIZ || !/^[A-Za-z0-9_.-]*$/.test(name)) {
      throw new TapError(
        name,
        `not an interface name (up to ${IFNAMSIZ - 1} characters)`,
        "bad-name",
      );
    }
    this.fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK, "opening /dev/net/tun");
    const req = new Struct(ifreq);
    req.buf.write(name, 0, "latin1");
    req.set("ifr_flags", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    try {
      ioctl(this.fd, TUNSETIFF, req.buf, "TUNSETIFF");
      const size = Buffer.alloc(4);
      size.writeInt32LE(vnetHeaderBytes);
      ioctl(this.fd, TUNSETVNETHDRSZ, size, "TUNSETVNETHDRSZ");
    } catch (err) {
      close(this.fd);
      const code = err instanceof SyscallError ? err.code : "";
      if (code === "EBUSY") throw new TapError(name, "in use by another process (or VM)", "in-use");
      if (code === "EPERM")
        throw new TapError(name, "permission denied (needs CAP_NET_ADMIN)", "permission");
      throw new TapError(name, (err as Error).message, "failed");
    }
    this.name = req.buf.toString("latin1", 0, IFNAMSIZ).replace(/\0.*$/s, "");
  }

  /** Which offloads the kernel may hand us (TUN_F_* bits), as the guest accepted them. */
  setOffload(flags: number): void {
    ioctlValue(this.fd, TUNSETOFFLOAD, flags, "TUNSETOFFLOAD");
  }

  close(): void {
    close(this.fd);
  }
}
