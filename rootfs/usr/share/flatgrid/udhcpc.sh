#!/bin/sh
# busybox udhcpc hook: applies a lease with ip(8). The supervisor runs udhcpc in the
# foreground as the "dhcp" service and counts it ready at the first lease.
set -u
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound | renew)
    ip -4 addr replace "$ip/${mask:-24}" dev "$interface"
    if [ -n "${router:-}" ]; then
      ip -4 route replace default via "${router%% *}" dev "$interface"
    fi
    if [ -n "${dns:-}" ]; then
      : >/etc/resolv.conf
      for server in $dns; do echo "nameserver $server" >>/etc/resolv.conf; done
    fi
    echo "lease of $ip obtained on $interface, lease time ${lease:-?}"
    ;;
  leasefail | nak)
    echo "no lease on $interface (${message:-$1})" >&2
    ;;
esac
exit 0
