import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { run } from "./tools.js";

/**
 * The node's kernel modules: a curated set of Debian's generic kernel (linux-image-amd64,
 * 390 MiB of modules), with what servers in small and mid-size rooms have and what flatgrid
 * runs on, plus everything those depend on (modules.dep), and depmod run over the result so
 * that the supervisor's coldplug finds drivers by their aliases.
 */

/** Directories taken whole, under lib/modules/VERSION/kernel/. */
const DIRS = [
  // NICs: every Ethernet driver (Intel, Broadcom, Realtek, Mellanox, ...): the one a
  // server has is the one that must be there.
  "drivers/net/ethernet",
  // Disks: SATA/AHCI and other ATA, NVMe, and the common SAS/RAID controllers below.
  "drivers/ata",
  "drivers/nvme",
  "drivers/scsi/megaraid",
  "drivers/scsi/mpt3sas",
  "drivers/scsi/smartpqi",
  "drivers/scsi/aacraid",
  // Keyboards on USB for the console; USB sticks.
  "drivers/usb/host",
  "drivers/usb/storage",
  "drivers/hid/usbhid",
  // Virtual machines as nodes (the simulator, clouds) and the VMM's own needs.
  "drivers/virtio",
  "drivers/vhost",
  "drivers/char/hw_random",
  "arch/x86/kvm",
  "net/vmw_vsock",
  // Application networks: bridges, VXLAN, nftables.
  "net/bridge",
  "net/netfilter",
  "net/ipv4/netfilter",
  "net/ipv6/netfilter",
  // Data: ext4 and the future replication (DRBD).
  "fs/ext4",
  "fs/overlayfs",
  "drivers/block/drbd",
  // Checksums and ciphers the above ask for by name (ext4's crc32c is a soft dependency).
  "crypto",
  "arch/x86/crypto",
  "lib",
];

/** Single modules, by path under kernel/. */
const FILES = [
  "drivers/net/virtio_net.ko",
  "drivers/net/tun.ko",
  "drivers/net/veth.ko",
  "drivers/net/vxlan/vxlan.ko",
  "drivers/net/bonding/bonding.ko",
  "drivers/block/virtio_blk.ko",
  "drivers/block/loop.ko",
  "drivers/scsi/sd_mod.ko",
  "drivers/scsi/virtio_scsi.ko",
  "drivers/scsi/hpsa.ko",
  "drivers/hid/hid-generic.ko",
  "net/8021q/8021q.ko",
];

/** modules.dep: each module's path and the paths it needs, relative to the version dir. */
export function readModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    deps.set(
      line.slice(0, colon),
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
  }
  return deps;
}

/** The chosen modules and everything they need, in sorted order. Pure. */
export function closure(deps: Map<string, string[]>, wanted: (path: string) => boolean): string[] {
  const out = new Set<string>();
  const visit = (m: string) => {
    if (out.has(m)) return;
    out.add(m);
    for (const d of deps.get(m) ?? []) visit(d);
  };
  for (const m of deps.keys()) if (wanted(m)) visit(m);
  return [...out].sort();
}

export function isCurated(path: string): boolean {
  if (!path.startsWith("kernel/")) return false;
  const rel = path.slice("kernel/".length).replace(/\.ko(\.xz|\.zst|\.gz)?$/, ".ko");
  return FILES.includes(rel) || DIRS.some((d) => rel.startsWith(`${d}/`));
}

/**
 * Copies the curated modules of `tree` (an extracted linux-image package) into `root` and
 * runs depmod there; returns how many modules and bytes.
 */
export function installCuratedModules(
  tree: string,
  version: string,
  root: string,
): { modules: number; bytes: number } {
  const from = join(tree, "lib/modules", version);
  const to = join(root, "lib/modules", version);
  // The package ships no modules.dep (its postinst runs depmod): make one for the whole tree.
  if (!existsSync(join(from, "modules.dep"))) run("depmod", ["-b", tree, version]);
  const chosen = closure(
    readModulesDep(readFileSync(join(from, "modules.dep"), "utf8")),
    isCurated,
  );
  let bytes = 0;
  for (const m of chosen) {
    mkdirSync(dirname(join(to, m)), { recursive: true });
    copyFileSync(join(from, m), join(to, m));
    bytes += readFileSync(join(to, m)).length;
  }
  // What depmod and modprobe read besides the modules: which are built in, and the order.
  for (const f of ["modules.builtin", "modules.builtin.modinfo", "modules.order"])
    if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
  run("depmod", ["-b", root, version]);
  return { modules: chosen.length, bytes };
}
