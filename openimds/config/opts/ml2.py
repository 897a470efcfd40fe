"""ML2-style segment options (Neutron's ml2_conf.ini) and the agent registry's timing.

The control-plane API reads them: tenants' networks get the first `[ml2] tenant_network_types`
entry with a free id, taken from `[ml2_type_vxlan] vni_ranges` or `[ml2_type_vlan]
network_vlan_ranges`. `local` (the one-host fabric) is the default, as in Neutron.
"""

from __future__ import annotations

from oslo_config import cfg, types

NETWORK_TYPES = ("local", "flat", "vlan", "vxlan")

ML2_OPTS: list[cfg.Opt] = [
    cfg.ListOpt("tenant_network_types", default=["local"],
                item_type=types.String(choices=NETWORK_TYPES),
                help="Network types for tenant networks, in order of preference; the first "
                     "with a free id is used."),
]
VXLAN_OPTS: list[cfg.Opt] = [
    cfg.ListOpt("vni_ranges", default=[],
                help="<vni_min>:<vni_max> ranges of VXLAN VNIs for tenant networks."),
]
VLAN_OPTS: list[cfg.Opt] = [
    cfg.ListOpt("network_vlan_ranges", default=[],
                help="<physical_network>[:<vlan_min>:<vlan_max>]: physical networks usable "
                     "for VLAN provider networks, and the ranges tenant networks draw from."),
]
FLAT_OPTS: list[cfg.Opt] = [
    cfg.ListOpt("flat_networks", default=["*"],
                help="Physical networks usable for flat networks; '*' allows any."),
]
# [DEFAULT] options of the server side (neutron.conf).
SERVER_OPTS: list[cfg.Opt] = [
    cfg.IntOpt("agent_down_time", default=75, min=1,
               help="Seconds after the last heartbeat when an agent counts as dead; at "
                    "least twice [AGENT] report_interval."),
    cfg.IntOpt("dhcp_agents_per_network", default=1, min=1,
               help="DHCP agents (on distinct hosts) scheduled to serve each network."),
    cfg.BoolOpt("allow_automatic_dhcp_failover", default=True,
                help="Move the networks of a DHCP agent that has been dead for "
                     "agent_down_time to alive DHCP agents."),
    cfg.BoolOpt("allow_automatic_l3agent_failover", default=True,
                help="Move the routers of an L3 agent that has been dead for agent_down_time "
                     "to alive L3 agents (Neutron's default is false; openimds' is true)."),
    # HA routers (issue 11; Neutron's l3_hamode_db options).
    cfg.BoolOpt("l3_ha", default=None,
                help="Make new routers highly available (keepalived VRRP among several L3 "
                     "agents). Unset (the default): true when at least 2 L3 agents are alive "
                     "when the router is created; Neutron's default is false."),
    cfg.IntOpt("max_l3_agents_per_router", default=3, min=0,
               help="L3 agents (on distinct hosts) an HA router is scheduled to; 0 = all."),
    cfg.IntOpt("min_l3_agents_per_router", default=2, min=2,
               help="Creating a router with ha=true fails (409 HANotEnoughAvailableAgents) "
                    "with fewer alive L3 agents than this."),
    cfg.StrOpt("l3_ha_net_cidr", default="169.254.192.0/18",
               help="Subnet of the per-project HA network (`HA network tenant <project>`) "
                    "whose ha- ports carry VRRP between a router's instances."),
    cfg.StrOpt("metadata_mode", default="network_node",
               choices=("network_node", "distributed"),
               help="Where guests' metadata requests go. network_node: to the DHCP or router "
                    "namespace on a network node (round 1). distributed: every network with "
                    "a DHCP-enabled IPv4 subnet gets a network:distributed metadata port, the "
                    "DHCP opts route 169.254.169.254/32 via its address, and each compute "
                    "host's l2-agent answers its own guests from a qmeta-<network> namespace "
                    "(docs/distributed-metadata.md). Changing it converges at the next start "
                    "of the control API; back to network_node, each metadata port keeps "
                    "serving the routes already leased for one dhcp_lease_duration."),
]

REGISTRATIONS: list[tuple[str, list[cfg.Opt]]] = [
    ("DEFAULT", SERVER_OPTS),
    ("ml2", ML2_OPTS),
    ("ml2_type_vxlan", VXLAN_OPTS),
    ("ml2_type_vlan", VLAN_OPTS),
    ("ml2_type_flat", FLAT_OPTS),
]
