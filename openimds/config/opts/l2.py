"""The l2-agent (linuxbridge_agent.ini): physical interface mappings and VXLAN."""

from __future__ import annotations

from oslo_config import cfg

LINUX_BRIDGE_OPTS: list[cfg.Opt] = [
    cfg.ListOpt("physical_interface_mappings", default=[],
                help="<physical_network>:<interface> pairs: the interface that carries each "
                     "physical network's flat and VLAN segments on this host."),
]
VXLAN_OPTS: list[cfg.Opt] = [
    cfg.BoolOpt("enable_vxlan", default=True, help="Build VXLAN segments on this host."),
    cfg.IPOpt("local_ip", help="This host's tunnel endpoint address (VXLAN source)."),
    cfg.PortOpt("udp_dstport", default=4789, help="UDP port of VXLAN."),
    cfg.BoolOpt("l2_population", default=True,
                help="Flood lists from the agent registry (head-end replication). openimds "
                     "always works this way (no multicast groups); false only warns."),
]

REGISTRATIONS: list[tuple[str, list[cfg.Opt]]] = [
    ("linux_bridge", LINUX_BRIDGE_OPTS),
    ("vxlan", VXLAN_OPTS),
]
