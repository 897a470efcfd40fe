#!/bin/sh
# A minimal udhcpc hook for demo guests in network namespaces. The stock busybox/dhclient
# scripts rewrite the host's /etc/resolv.conf (a namespace shares the host's files); this one
# only runs `ip addr` and `ip route` on the guest's own interface.
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      # option 121 (asked for with -O staticroutes): RFC 3442 says ignore option 3 then.
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
