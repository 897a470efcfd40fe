"""DhcpSettings: the plain values the DHCP agent runs on, built once from dhcp_agent.ini.

`settings_from_conf` is the one place that reads the agent's options. It gives one frozen
value: where the agent's state and the fabric are, which host it is, and the plan's inputs
(`DhcpOptions`), which carry `dhcp_confs` and the proxies' `ProxyDefaults` exactly once: the
plan derives every conf dir and its ProxySpec from them, and the applier reads the same value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from openimds.dhcp.plan import DhcpOptions
from openimds.linux.fabric import HOST_FABRIC_NAME
from openimds.proxy.options import proxy_defaults_from_conf

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["SERVICE", "DhcpSettings", "dhcp_options_from_conf", "settings_from_conf"]

SERVICE = "dhcp-agent"


@dataclass(frozen=True)
class DhcpSettings:
    """The DHCP agent's settings (plain values; the pure code never sees the ConfigOpts)."""

    fabric: str  # the fabric namespace the link verbs use (never "")
    state_path: str
    options: DhcpOptions = field(default_factory=DhcpOptions)
    # [DEFAULT] host: with several DHCP agents each serves the networks scheduled to it.
    host: str = ""
    # As configured ("" = the agent's own namespace, attached as `fabric`).
    fabric_namespace: str = ""

    @property
    def dhcp_confs(self) -> str:
        return self.options.dhcp_confs

    def conf_dir(self, network_id: str) -> str:
        return os.path.join(self.options.dhcp_confs, network_id)


def dhcp_options_from_conf(conf: ConfigOpts) -> DhcpOptions:
    """The plan's inputs from a loaded `dhcp-agent` ConfigOpts, the proxies' defaults among
    them (ValueError when the proxies would run as root)."""
    return DhcpOptions(
        enable_isolated_metadata=bool(conf.enable_isolated_metadata),
        force_metadata=bool(conf.force_metadata),
        enable_metadata_network=bool(conf.enable_metadata_network),
        dhcp_lease_duration=int(conf.dhcp_lease_duration),
        dns_domain=conf.dns_domain or "",
        dhcp_confs=conf.dhcp_confs,
        dnsmasq_lease_max=int(conf.dnsmasq_lease_max),
        dnsmasq_config_file=conf.dnsmasq_config_file or "",
        dnsmasq_dns_servers=tuple(conf.dnsmasq_dns_servers or ()),
        ipv6_enabled=os.path.exists("/proc/net/if_inet6"),
        vrrp_advert_int=int(conf.ha_vrrp_advert_int),
        proxy=proxy_defaults_from_conf(conf, SERVICE),
    )


def settings_from_conf(conf: ConfigOpts) -> DhcpSettings:
    """DhcpSettings from `load_config("dhcp-agent", ...)`."""
    configured = str(conf.fabric_namespace or "")
    return DhcpSettings(
        fabric=configured or HOST_FABRIC_NAME,
        state_path=str(conf.state_path),
        options=dhcp_options_from_conf(conf),
        host=str(conf.host or ""),
        fabric_namespace=configured,
    )
