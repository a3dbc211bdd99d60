import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The guest side of an appliance: which kernel modules its initrd needs, and its init.
 *
 * The configuration reaches the guest on the kernel command line, as fg.KEY=VALUE words with
 * VALUE percent-encoded (so spaces and quotes survive): fg.name (instance), fg.app, fg.ip
 * (address/prefix on eth0), fg.mtu (eth0's), fg.gw, fg.t.TERMINAL (the peers of an output terminal,
 * host:port,...) and fg.p.PROPERTY. The init turns them into FG_NAME, FG_T_DB, FG_P_TITLE...
 * in /run/flatgrid/env for the class's /flatgrid/start.
 */

/** The kernel as image/debian.ts's debianCloudKernel() gives it: its modules are in `tree`. */
export interface GuestKernel {
  path: string;
  version: string;
  tree: string;
}

/** Modules the guest loads, the ones they depend on first (Debian's cloud kernel has them as modules). */
const WANTED = ["virtio_mmio", "virtio_blk", "virtio_net"];

/** Each module's file and, before it, its dependencies (from modinfo), in load order. */
export function guestModules(kernel: GuestKernel): { name: string; path: string }[] {
  const base = join(kernel.tree, "lib/modules", kernel.version);
  const builtin = new Set(
    readFileSync(join(base, "modules.builtin"), "utf8")
      .split("\n")
      .map((l) => l.split("/").pop()?.replace(/\.ko$/, "") ?? ""),
  );
  const paths = new Map<string, string>();
  const index = (dir: string) => {
    for (const line of execFileSync("find", [dir, "-name", "*.ko"], { encoding: "utf8" }).split(
      "\n",
    ))
      if (line)
        paths.set(line.split("/").pop()?.replace(/\.ko$/, "").replace(/-/g, "_") ?? "", line);
  };
  index(join(base, "kernel"));
  const order: { name: string; path: string }[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    const key = name.replace(/-/g, "_");
    if (seen.has(key) || builtin.has(key) || builtin.has(name)) return;
    seen.add(key);
    const path = paths.get(key);
    if (!path || !existsSync(path))
      throw new Error(`kernel ${kernel.version} has no module ${name}`);
    const deps = execFileSync("modinfo", ["-F", "depends", path], { encoding: "utf8" })
      .trim()
      .split(",")
      .filter(Boolean);
    for (const d of deps) visit(d);
    order.push({ name: key, path });
  };
  for (const m of WANTED) visit(m);
  return order;
}

/** The guest initrd's /init: modules, configuration, network, then the class's root disk. */
export const GUEST_INIT = (modules: string[]) => `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "flatgrid-guest: $*" > /dev/console; sleep 2; reboot -f; }
for m in ${modules.join(" ")}; do
  insmod /lib/modules/$m.ko || echo "flatgrid-guest: insmod $m failed" > /dev/console
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/vda ] || fail "no root disk (/dev/vda)"
# A read-only root disk (shared by instances of a class) is mounted read-only.
opts=rw
[ "$(cat /sys/block/vda/ro)" = 1 ] && opts=ro
mount -t ext4 -o $opts /dev/vda /newroot || fail "cannot mount the root disk"
mount -t tmpfs -o mode=755 run /newroot/run
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mkdir -p /newroot/run/flatgrid
# fg.KEY=VALUE -> FG_KEY='VALUE' (percent-decoded, single quotes escaped)
for w in $(cat /proc/cmdline); do
  case "$w" in
    fg.*=*)
      k=$(echo "\${w%%=*}" | cut -c4- | tr 'a-z.-' 'A-Z__')
      v=$(printf '%b' "$(echo "\${w#*=}" | sed 's/%\\([0-9A-Fa-f][0-9A-Fa-f]\\)/\\\\x\\1/g')" | sed "s/'/'\\\\\\\\''/g")
      echo "FG_$k='$v'" >> /newroot/run/flatgrid/env
      ;;
  esac
done
touch /newroot/run/flatgrid/env
. /newroot/run/flatgrid/env
[ -n "$FG_NAME" ] && hostname "$(echo "$FG_NAME" | tr . -)"
# The instance's data volume, when it has one (fg.volume=vdb): kept across its restarts.
case "$FG_VOLUME" in
  vd[b-z])
    i=0
    while [ ! -b /dev/$FG_VOLUME ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    mount -t ext4 -o rw,noatime /dev/$FG_VOLUME /newroot/data || fail "cannot mount the data volume (/dev/$FG_VOLUME)"
    ;;
esac
ip link set lo up
if [ -n "$FG_IP" ]; then
  # An application network is a VXLAN segment: smaller frames than the wire's.
  [ -n "$FG_MTU" ] && ip link set eth0 mtu "$FG_MTU"
  ip addr add "$FG_IP" dev eth0 && ip link set eth0 up || fail "cannot configure eth0 with $FG_IP"
  [ -n "$FG_GW" ] && ip route add default via "$FG_GW"
fi
echo "flatgrid-guest: $FG_NAME: $(cat /newroot/flatgrid/class 2>/dev/null) on $(nproc) cpus, eth0 \${FG_IP:-unconfigured}" > /dev/console
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /flatgrid/start
`;
