"""The L3 agent (l3_agent.ini): the proxy and REDIRECT rule in router namespaces."""

from __future__ import annotations

from oslo_config import cfg

# Also the DHCP agent's: keepalived of a network's metadata next hop (dhcp/vrrp.py).
HA_VRRP_ADVERT_INT = cfg.IntOpt(
    "ha_vrrp_advert_int", default=2, min=1, max=255,
    help="Seconds between VRRP advertisements of an HA router's master (l3-agent) or of the "
         "DHCP namespace holding a network's metadata next hop (dhcp-agent); a backup takes "
         "over about 3 intervals after the master's last one.")

DEFAULT_OPTS: list[cfg.Opt] = [
    cfg.BoolOpt("enable_metadata_proxy", default=True,
                help="Run the proxy in every router namespace and install the REDIRECT rule."),
    cfg.StrOpt("metadata_access_mark", default="0x1",
               help="iptables mark for metadata traffic (masked with 0xffff)."),
    cfg.StrOpt("external_ingress_mark", default="0x2",
               help="iptables mark for traffic from the external network."),
    cfg.ListOpt("metadata_ipv6_addresses", default=[],
                help="openimds: extra IPv6 metadata addresses served on the router path "
                "besides fe80::a9fe:a9fe, e.g. fd00:ec2::254 for AWS SDKs in "
                "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6 (reached through the guest's "
                "default route)."),
    HA_VRRP_ADVERT_INT,
    cfg.StrOpt("ha_vrrp_auth_type", default="PASS", choices=("AH", "PASS"),
               help="VRRP authentication type (keepalived authentication/auth_type); used "
                    "only when ha_vrrp_auth_password is set."),
    cfg.StrOpt("ha_vrrp_auth_password", secret=True,
               help="VRRP authentication password (keepalived keeps the first 8 characters)."),
    cfg.IntOpt("ha_keepalived_state_change_server_threads", min=1,
               help="Accepted for Neutron's l3_agent.ini; openimds runs no state-change "
                    "server (the agent reads an HA router's state from its namespace), so it "
                    "has no effect."),
]
