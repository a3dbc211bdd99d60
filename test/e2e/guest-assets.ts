// What a simulated node needs to run a Linux microVM: the Debian cloud kernel, a busybox
// initrd whose /init reports and reboots, a data disk, and a vm.json, all on one ext4
// image (made with mke2fs -d, no loop mounts) that the node gets as its virtio disk.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { debianExtract } from "../../image/debian.js";

function sh(cmd: string, args: string[], cwd?: string): Buffer {
  return execFileSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28 });
}

function debianFile(pkg: string, inside: string, to: string): void {
  copyFileSync(join(debianExtract(pkg), inside), to);
}

/** The guest's /init: mounts, reports CPUs, counts boots on /dev/vda, then reboots. */
const GUEST_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "guest: init reached on $(nproc) cpus"
if [ -b /dev/vda ]; then
  n=$(dd if=/dev/vda bs=16 count=1 2>/dev/null | tr -dc 0-9)
  n=$(( \${n:-0} + 1 ))
  printf '%-16s' "$n" | dd of=/dev/vda bs=16 count=1 conv=notrunc 2>/dev/null
  sync
  echo "guest: boot count $n"
else
  echo "guest: no virtio disk"
fi
echo "guest: rebooting"
reboot -f
`;

export interface GuestAssets {
  image: string;
}

export function buildGuestAssets(dir: string, kernel: string): GuestAssets {
  const root = join(dir, "assets");
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  copyFileSync(kernel, join(root, "vmlinuz"));
  const initrd = join(dir, "initrd-root");
  rmSync(initrd, { recursive: true, force: true });
  mkdirSync(join(initrd, "bin"), { recursive: true });
  debianFile("busybox-static", "bin/busybox", join(initrd, "bin/busybox"));
  chmodSync(join(initrd, "bin/busybox"), 0o755);
  symlinkSync("busybox", join(initrd, "bin/sh"));
  writeFileSync(join(initrd, "init"), GUEST_INIT, { mode: 0o755 });
  const list = sh("find", [".", "-print0"], initrd);
  const cpio = execFileSync("cpio", ["--quiet", "-o", "-H", "newc", "--null"], {
    cwd: initrd,
    input: list,
    maxBuffer: 1 << 28,
  });
  writeFileSync(
    join(root, "initrd.img"),
    execFileSync("gzip", ["-n"], { input: cpio, maxBuffer: 1 << 28 }),
  );
  writeFileSync(join(root, "data.img"), Buffer.alloc(1024 * 1024));
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
  const image = join(dir, "assets.ext4");
  rmSync(image, { force: true });
  sh("mke2fs", ["-q", "-t", "ext4", "-d", root, "-L", "assets", image, "96M"]);
  return { image };
}
