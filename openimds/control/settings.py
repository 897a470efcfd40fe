"""The control-plane API's settings, built once from a loaded `control-api` ConfigOpts.

`settings_from_conf` is the one place that reads the API's options; the frozen value it
returns (`control.call.Settings`, which every handler receives in its `Call`) is all the API
runs on. Raises ConfigError, naming the option, when a value cannot be used.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from openimds.config import ConfigError
from openimds.control.call import Settings
from openimds.control.segments import ConfigInvalid, segment_config
from openimds.inventory.retention import Retention
from openimds.metadata.options import defaults_from_conf

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["ControlSettings", "listener_url", "settings_from_conf"]

# The API's settings under this part's name (the dataclass is `call.Settings`).
ControlSettings = Settings


def settings_from_conf(conf: ConfigOpts) -> Settings:
    """The API's plain settings from a loaded control-api ConfigOpts (ConfigError when an ml2
    range or the HA network's CIDR is malformed)."""
    try:
        segments = segment_config(conf.ml2.tenant_network_types,
                                  conf.ml2_type_vxlan.vni_ranges,
                                  conf.ml2_type_vlan.network_vlan_ranges,
                                  conf.ml2_type_flat.flat_networks)
    except ConfigInvalid as exc:
        raise ConfigError("configuration", None, None, str(exc)) from None
    defaults = defaults_from_conf(conf)
    md = conf.metadata
    try:
        ha_cidr = str(ipaddress.IPv4Network(conf.l3_ha_net_cidr))
    except ValueError as exc:
        raise ConfigError("configuration", "DEFAULT", "l3_ha_net_cidr", str(exc)) from None
    return Settings(bind_host=conf.bind_host, bind_port=conf.bind_port,
                    token_expiration=conf.token_expiration, region=str(conf.region_name),
                    public_url=listener_url(conf.bind_host, conf.bind_port),
                    metadata_url=listener_url(conf.metadata_listen, conf.metadata_listen_port),
                    metadata_port=conf.metadata_listen_port,
                    metadata_defaults=defaults,
                    identity_cert_file=md.identity_cert_file or None,
                    segments=segments, agent_down_time=conf.agent_down_time,
                    dhcp_agents_per_network=conf.dhcp_agents_per_network,
                    allow_automatic_dhcp_failover=conf.allow_automatic_dhcp_failover,
                    allow_automatic_l3agent_failover=conf.allow_automatic_l3agent_failover,
                    metadata_mode=str(conf.metadata_mode),
                    dhcp_lease_duration=int(conf.dhcp_lease_duration),
                    l3_ha=conf.l3_ha, max_l3_agents_per_router=conf.max_l3_agents_per_router,
                    min_l3_agents_per_router=conf.min_l3_agents_per_router,
                    l3_ha_net_cidr=ha_cidr,
                    change_retention=Retention(conf.change_retention_seconds,
                                               conf.change_retention_count),
                    change_prune_interval=float(conf.change_prune_interval))


def listener_url(host: str, port: int) -> str | None:
    """http://host:port for a listener on one address; None for a wildcard listener (the
    catalog then names the address each request came to)."""
    if host in ("", "0.0.0.0", "::"):
        return None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
