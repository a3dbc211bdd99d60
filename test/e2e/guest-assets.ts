// What a simulated node needs to run a Linux microVM: the Debian cloud kernel, a busybox
// initrd (with the kernel's virtio modules) whose /init reports and reboots, a data disk,
// and a vm.json, all on one ext4 image (made with mke2fs -d, no loop mounts) that the node
// gets as its virtio disk.
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { debianExtract } from "../../image/debian.js";
import type { GuestKernel } from "../../image/guest.js";
import { cpioImage } from "../../image/tools.js";
import { XEN_ELFNOTE_PHYS32_ENTRY } from "../../src/kvm/index.js";
import { extractVmlinux } from "../../src/vmm/index.js";

/** native/out/vsock-echo, built by npm run build (make -C native): static, runs anywhere. */
const VSOCK_ECHO = fileURLToPath(new URL("../../../native/out/vsock-echo", import.meta.url));

function sh(cmd: string, args: string[], cwd?: string): Buffer {
  return execFileSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28 });
}

function debianFile(pkg: string, inside: string, to: string): void {
  copyFileSync(join(debianExtract(pkg), inside), to);
}

/**
 * Debian's cloud kernel has virtio, virtio-mmio and virtio-blk as modules, in this order of
 * dependency (modinfo -F depends); the initrd carries them and /init loads them.
 */
const GUEST_MODULES = [
  "drivers/virtio/virtio_ring.ko",
  "drivers/virtio/virtio.ko",
  "drivers/virtio/virtio_mmio.ko",
  "drivers/block/virtio_blk.ko",
];

/** The guest side of virtio-vsock, loaded only by a VM whose command line says fgvsock. */
const VSOCK_MODULES = [
  "net/vmw_vsock/vsock.ko",
  "net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
  "net/vmw_vsock/vmw_vsock_virtio_transport.ko",
];

/** The port the node's vsock-echo listens on in the vsock round trip. */
export const VSOCK_PORT = 5000;

/** Read by the guest from the data disk, to show a read reaches the file behind /dev/vda. */
export const DISK_MARKER = "flatgrid-e2e-disk-marker";
const DISK_MARKER_OFFSET = 4096;

/**
 * The guest's /init: mounts, reports CPUs, loads the virtio modules, reads the marker and
 * counts boots on /dev/vda, then reboots. The kernel's view of ACPI, CPUs and virtio goes to
 * the console only when something is missing.
 */
const GUEST_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "guest: init reached on $(nproc) cpus"
echo "guest: cpus online $(cat /sys/devices/system/cpu/online)"
echo "guest: timer $(cat /sys/devices/system/clockevents/clockevent0/current_device)"
echo "guest: cpu flags$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\\n' | grep -x -E 'hypervisor|ht|tsc_deadline_timer|x2apic' | sort | tr '\\n' ' ' | sed 's/^/ /')"
for m in ${GUEST_MODULES.map((m) => m.split("/").pop()).join(" ")}; do
  insmod /lib/modules/$m || echo "guest: insmod $m failed"
done
if grep -q fgvsock /proc/cmdline; then
  for m in ${VSOCK_MODULES.map((m) => m.split("/").pop()).join(" ")}; do
    insmod /lib/modules/$m || echo "guest: insmod $m failed"
  done
  echo "guest: vsock $(/bin/vsock-echo send 2 ${VSOCK_PORT} "hello from the guest" 2>&1)"
fi
i=0
while [ ! -b /dev/vda ] && [ $i -lt 10 ]; do sleep 1; i=$((i + 1)); done
if [ -b /dev/vda ]; then
  # The ring features the driver took: bit 28 indirect descriptors, bit 29 event indexes.
  echo "guest: disk ring features indirect $(cut -c29 /sys/block/vda/device/features) event_idx $(cut -c30 /sys/block/vda/device/features)"
  echo "guest: disk marker $(dd if=/dev/vda bs=${DISK_MARKER_OFFSET} skip=1 count=1 2>/dev/null | tr -dc a-z0-9-)"
  n=$(dd if=/dev/vda bs=16 count=1 2>/dev/null | tr -dc 0-9)
  n=$(( \${n:-0} + 1 ))
  printf '%-16s' "$n" | dd of=/dev/vda bs=16 count=1 conv=notrunc 2>/dev/null
  sync
  echo "guest: boot count $n"
  if [ "$n" = 1 ]; then
    # Discard: 64 KiB written, then given back; the device punches a hole in the node's file.
    yes flatgrid | head -c 65536 | dd of=/dev/vda bs=65536 seek=8 conv=notrunc 2>/dev/null
    sync
    echo "guest: discard limit $(cat /sys/block/vda/queue/discard_max_bytes) bytes"
    blkdiscard -o 524288 -l 65536 /dev/vda &&
      echo "guest: discarded, $(dd if=/dev/vda bs=65536 skip=8 count=1 2>/dev/null | tr -d '\\000' | wc -c) bytes of it not zero"
  fi
else
  echo "guest: no virtio disk"
fi
if [ ! -b /dev/vda ] || [ "$(nproc)" != 2 ]; then
  dmesg | grep -i -E "acpi|smp|apic|cpu|virtio|vda|error|fail" | tail -60
fi
echo "guest: rebooting"
reboot -f
`;

/**
 * The vmlinux with its PVH note's type changed to one nobody reads: what a kernel built
 * without CONFIG_PVH looks like to the VMM, which then enters it at its 64-bit entry.
 */
function withoutPvhNote(vmlinux: Buffer): Buffer {
  const note = Buffer.alloc(16);
  note.writeUInt32LE(4, 0);
  note.writeUInt32LE(8, 4);
  note.writeUInt32LE(XEN_ELFNOTE_PHYS32_ENTRY, 8);
  note.write("Xen\0", 12, "latin1");
  const at = vmlinux.indexOf(note);
  if (at < 0 || vmlinux.indexOf(note, at + 1) >= 0)
    throw new Error("the vmlinux has no single PVH entry note to take out");
  const copy = Buffer.from(vmlinux);
  copy.writeUInt32LE(0xfff0, at + 8);
  return copy;
}

export interface GuestAssets {
  image: string;
}

export function buildGuestAssets(dir: string, kernel: GuestKernel): GuestAssets {
  const root = join(dir, "assets");
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  copyFileSync(kernel.path, join(root, "vmlinuz"));
  // The same kernel unpacked, for PVH, and once more without its PVH note.
  const vmlinux = extractVmlinux(readFileSync(kernel.path), kernel.path);
  writeFileSync(join(root, "vmlinux"), vmlinux);
  writeFileSync(join(root, "vmlinux-nopvh"), withoutPvhNote(vmlinux));
  const initrd = join(dir, "initrd-root");
  rmSync(initrd, { recursive: true, force: true });
  mkdirSync(join(initrd, "bin"), { recursive: true });
  mkdirSync(join(initrd, "lib/modules"), { recursive: true });
  for (const m of [...GUEST_MODULES, ...VSOCK_MODULES]) {
    const from = join(kernel.tree, "lib/modules", kernel.version, "kernel", m);
    copyFileSync(from, join(initrd, "lib/modules", m.split("/").pop() ?? m));
  }
  debianFile("busybox-static", "bin/busybox", join(initrd, "bin/busybox"));
  chmodSync(join(initrd, "bin/busybox"), 0o755);
  symlinkSync("busybox", join(initrd, "bin/sh"));
  // Both ends of the vsock round trip: in the guest, and on the node from the assets disk.
  copyFileSync(VSOCK_ECHO, join(initrd, "bin/vsock-echo"));
  chmodSync(join(initrd, "bin/vsock-echo"), 0o755);
  copyFileSync(VSOCK_ECHO, join(root, "vsock-echo"));
  chmodSync(join(root, "vsock-echo"), 0o755);
  writeFileSync(join(initrd, "init"), GUEST_INIT, { mode: 0o755 });
  cpioImage(initrd, join(root, "initrd.img"));
  const data = Buffer.alloc(1024 * 1024);
  data.write(DISK_MARKER, DISK_MARKER_OFFSET, "latin1");
  writeFileSync(join(root, "data.img"), data);
  const vm = (vcpus: number) => ({
    memoryMiB: 256,
    vcpus,
    kernel: "/mnt/vmlinuz",
    initrd: "/mnt/initrd.img",
    cmdline: "quiet",
    disks: [{ path: "/mnt/data.img" }],
  });
  writeFileSync(join(root, "vm1.json"), JSON.stringify(vm(1)));
  writeFileSync(join(root, "vm2.json"), JSON.stringify(vm(2)));
  writeFileSync(join(root, "vm2-pvh.json"), JSON.stringify({ ...vm(2), kernel: "/mnt/vmlinux" }));
  // Context id 3: the first a guest may have; the node runs no other VM with one.
  writeFileSync(
    join(root, "vm-vsock.json"),
    JSON.stringify({
      ...vm(1),
      kernel: "/mnt/vmlinux-nopvh",
      cmdline: "quiet fgvsock",
      vsock: { cid: 3 },
    }),
  );
  const image = join(dir, "assets.ext4");
  rmSync(image, { force: true });
  sh("mke2fs", ["-q", "-t", "ext4", "-d", root, "-L", "assets", image, "224M"]);
  return { image };
}

/**
 * db.0's data volume, on the node's data partition, made there as the agent makes one (a
 * sparse file, mke2fs on the file): its counter must outlive a restart of its VM.
 */
export const DB_VOLUME = "/var/lib/flatgrid/e2e-db.0-volume.ext4";

/** The guest's address on the node's test bridge, and its vm.json. */
export interface CatalogVm {
  name: string;
  address: string;
  config: string;
}

/**
 * The appliance catalog (build/catalog, `npm run catalog`) on an ext4 disk for a node, with
 * the vm.json of a `db` and a `web` instance on a bridge of the node (fgbr0, 10.77.0.1/24):
 * web.0 at 10.77.0.2 counts its hits in db.0 at 10.77.0.3. Root disks are shared read-only;
 * db.0 has a data volume (DB_VOLUME).
 */
export function buildCatalogDisk(
  dir: string,
  catalog: string,
): { image: string; vms: CatalogVm[] } {
  const root = join(dir, "catalog");
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  for (const f of ["vmlinuz", "initrd.img", "db.ext4", "web.ext4", "manifest.json"])
    sh("cp", ["--sparse=always", join(catalog, f), join(root, f)]);
  const vm = (
    name: string,
    cls: string,
    ip: string,
    mac: string,
    tap: string,
    extra: string,
    volume?: string,
  ) => ({
    memoryMiB: 256,
    vcpus: 1,
    kernel: "/cat/vmlinuz",
    initrd: "/cat/initrd.img",
    // quiet: every byte on the emulated serial port is a VM exit, which under nested
    // virtualisation in software costs a node dearly (without it db took 92 s, not 36).
    cmdline: `console=ttyS0 quiet fg.name=${name} fg.app=shop fg.ip=${ip}/24 ${extra}`,
    disks: [
      { path: `/cat/${cls}.ext4`, readOnly: true },
      ...(volume ? [{ path: volume, readOnly: false }] : []),
    ],
    nics: [{ tap, mac }],
  });
  const vms: CatalogVm[] = [
    { name: "db.0", address: "10.77.0.3", config: "/cat/db.json" },
    { name: "web.0", address: "10.77.0.2", config: "/cat/web.json" },
  ];
  writeFileSync(
    join(root, "db.json"),
    JSON.stringify(
      vm(
        "db.0",
        "db",
        "10.77.0.3",
        "02:00:0a:4d:00:03",
        "e2et1",
        "fg.p.maxmemory=64mb fg.volume=vdb",
        DB_VOLUME,
      ),
    ),
  );
  writeFileSync(
    join(root, "web.json"),
    JSON.stringify(
      vm(
        "web.0",
        "web",
        "10.77.0.2",
        "02:00:0a:4d:00:02",
        "e2et2",
        "fg.t.db=10.77.0.3:6379 fg.p.title=flatgrid%20shop",
      ),
    ),
  );
  const image = join(dir, "catalog.ext4");
  rmSync(image, { force: true });
  sh("mke2fs", ["-q", "-t", "ext4", "-d", root, "-L", "catalog", image, "2G"]);
  return { image, vms };
}
