"""The DHCP agent (dhcp_agent.ini): when a DHCP namespace serves metadata, and dnsmasq."""

from __future__ import annotations

from oslo_config import cfg

DEFAULT_OPTS: list[cfg.Opt] = [
    cfg.BoolOpt("enable_isolated_metadata", default=False,
                help="Serve metadata from the DHCP namespace for subnets with no router port "
                "on their gateway, and push the 169.254.169.254/32 route (options 121/249)."),
    cfg.BoolOpt("force_metadata", default=False,
                help="Always serve metadata from the DHCP namespace, routed via the DHCP port."),
    cfg.BoolOpt("enable_metadata_network", default=False,
                help="Also serve metadata on a network whose subnet is in 169.254.0.0/16; "
                "needs enable_isolated_metadata."),
    cfg.StrOpt("dhcp_confs", default="$state_path/dhcp",
               help="Directory of the per-network dnsmasq files."),
    cfg.IntOpt("dnsmasq_lease_max", default=2**24, min=1,
               help="Upper bound of dnsmasq --dhcp-lease-max (capped by the subnet size)."),
    cfg.StrOpt("dnsmasq_config_file", default="",
               help="Extra dnsmasq configuration file (--conf-file)."),
    cfg.ListOpt("dnsmasq_dns_servers", default=[],
                help="DNS servers dnsmasq forwards to; empty = none (--no-resolv)."),
    cfg.StrOpt("dns_domain", default="openstacklocal", deprecated_name="dhcp_domain",
               help="Domain dnsmasq hands out (--domain)."),
]
