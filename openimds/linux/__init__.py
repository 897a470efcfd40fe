"""Thin kernel verbs: namespaces, links, addresses, iptables/nftables, and the daemons
(dnsmasq, keepalived) the agents run, each module with its own `__all__`.

The surface is the package's modules. Nothing is re-exported here: each caller imports the one
module it needs (a pyroute2 import costs every process that pays it). The action vocabulary,
the converge loop and namespace claims (`actions`, `converge`, `claims`) are reconciler
framework rather than kernel verbs and are left out of this list.
"""

__all__ = [
    "addresses",
    "dnsmasq",
    "fabric",
    "files",
    "iptables",
    "keepalived",
    "links",
    "logsink",
    "malloc",
    "netns",
    "nftables",
    "observe",
    "pidwatch",
    "ports",
    "process",
    "procfs",
    "segments",
]
