#!/usr/bin/env bash
# Installs what flatgrid needs on a Debian 12 machine with Node 20, as root, idempotently:
# Debian packages with apt-get (only when one is missing), then npm packages with npm ci
# (only when package-lock.json changed since the last install). Runs before npm ci, so it
# cannot be TypeScript.
#   ensure-deps.sh test   what `npm test` needs
#   ensure-deps.sh demo   what `npm run demo` needs
set -euo pipefail
purpose=${1:-test}
cd "$(dirname "$0")/.."

# gcc, make, libc6-dev: native/ (init is linked statically against libc.a).
# linux-libc-dev: the kernel UAPI headers that test/kvm checks src/kvm against.
# util-linux: unshare, for init as PID 1 of a namespace. procps, iproute2: the node's tools.
# iputils-ping: the kvm tests ping a guest through its virtio-net device.
# etcd-server: the grid's state store, run by the grid service (cluster tests, demo).
# nftables: the agent's rules for application networks (only connected terminals talk).
debs=(gcc make libc6-dev linux-libc-dev util-linux procps iproute2 kmod iputils-ping etcd-server nftables)
case "$purpose" in
  # mmdebstrap, cpio: the node image; qemu-system-x86: booting it (the e2e suite and the demo
  # grid do both).
  # grub-*, xorriso, mtools: the hybrid ISO (grub-mkrescue); ovmf: booting it on UEFI.
  # dnsmasq-base: DHCP and TFTP for the simulator's network boot (sim up --boot pxe).
  # tmux: the cluster suite drives the console through it (send-keys, capture-pane).
  # libxen-dev: Xen's public headers, which define the PVH boot ABI that test/kvm checks;
  # lz4: test/kvm packs data with it to check our LZ4 unpacker (vmlinux from a bzImage).
  test) debs+=(tmux libxen-dev lz4) ;;&
  test | image | demo) debs+=(mmdebstrap cpio gzip qemu-system-x86 grub-common grub-pc-bin grub-efi-amd64-bin xorriso mtools ovmf dnsmasq-base) ;;
  *) echo "ensure-deps.sh: unknown purpose '$purpose' (test, demo or image)" >&2; exit 2 ;;
esac

missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-deps.sh: Debian packages missing (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "ensure-deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "ensure-deps.sh: Node.js 20 or newer is needed, this is $(node --version)" >&2
  exit 1
fi

stamp=node_modules/.flatgrid-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "ensure-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
