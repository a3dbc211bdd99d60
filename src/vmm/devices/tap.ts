import { readFileSync } from "node:fs";
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

/**
 * Whether this process's network namespace has an interface of that name: /proc/self/net
 * is per namespace, where /sys/class/net is the one sysfs was mounted in.
 */
function interfaceExists(name: string): boolean {
  try {
    return readFileSync("/proc/self/net/dev", "latin1")
      .split("\n")
      .some((line) => line.trimStart().startsWith(`${name}:`));
  } catch {
    return true; // Unknown: say nothing rather than something wrong.
  }
}

export class Tap {
  readonly fd: number;
  readonly name: string;
  /**
   * The interface did not exist: TUNSETIFF made it, and it lasts only as long as this fd, on
   * no bridge (as QEMU's ifname= does). A VMM says so: the guest's network goes nowhere yet.
   */
  readonly created: boolean;

  constructor(name: string, vnetHeaderBytes: number) {
    if (Buffer.byteLength(name) >= IFNAMSIZ || !/^[A-Za-z0-9_.-]*$/.test(name)) {
      throw new TapError(
        name,
        `not an interface name (up to ${IFNAMSIZ - 1} characters)`,
        "bad-name",
      );
    }
    this.created = name !== "" && !interfaceExists(name);
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
