"""L3Settings: the plain values the L3 agent runs on, built once from l3_agent.ini.

`settings_from_conf` is the one place that reads the agent's options: the plan's inputs
(`L3Options`), the applier's (`RouterSettings`: fabric, state_path and the proxies'
`ProxyDefaults`), and which host the agent is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from openimds.l3.apply import RouterSettings
from openimds.l3.plan import L3Options
from openimds.linux.fabric import HOST_FABRIC_NAME
from openimds.proxy.options import proxy_defaults_from_conf

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["SERVICE", "L3Settings", "l3_options_from_conf", "settings_from_conf"]

SERVICE = "l3-agent"


@dataclass(frozen=True)
class L3Settings:
    router: RouterSettings  # the applier's: fabric, state_path, proxy defaults
    options: L3Options  # the plan's
    # [DEFAULT] host: with several L3 agents each builds the routers bound to it.
    host: str = ""
    # As configured ("" = the agent's own namespace, attached as `router.fabric`).
    fabric_namespace: str = ""


def l3_options_from_conf(conf: ConfigOpts) -> L3Options:
    return L3Options(
        enable_metadata_proxy=bool(conf.enable_metadata_proxy),
        metadata_port=int(conf.metadata_port),
        metadata_access_mark=conf.metadata_access_mark,
        ipv6_enabled=os.path.exists("/proc/net/if_inet6"),
        extra_ipv6_addresses=tuple(str(a) for a in conf.metadata_ipv6_addresses or ()),
        ha_advert_int=int(conf.ha_vrrp_advert_int),
        ha_auth_type=str(conf.ha_vrrp_auth_type) if conf.ha_vrrp_auth_password else None,
        ha_auth_password=conf.ha_vrrp_auth_password or None,
    )


def settings_from_conf(conf: ConfigOpts) -> L3Settings:
    """L3Settings from `load_config("l3-agent", ...)` (ValueError when the proxies would run
    as root)."""
    configured = str(conf.fabric_namespace or "")
    return L3Settings(
        router=RouterSettings(
            fabric=configured or HOST_FABRIC_NAME,
            state_path=str(conf.state_path),
            proxy=proxy_defaults_from_conf(conf, SERVICE),
        ),
        options=l3_options_from_conf(conf),
        host=str(conf.host or ""),
        fabric_namespace=configured,
    )
