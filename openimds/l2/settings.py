"""L2Settings: the plain values the l2-agent runs on, built once from its ini file.

`settings_from_conf` is the one place that reads the agent's options: the bridge plan's
inputs (`L2Options`) and the `qmeta-` namespaces' (`MetaSettings`: fabric, the l2-agent's own
proxy folder and the proxies' `ProxyDefaults`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from openimds.l2.metadata import MetaSettings, meta_state_path
from openimds.l2.plan import L2Options
from openimds.linux.fabric import HOST_FABRIC_NAME
from openimds.proxy.options import proxy_defaults_from_conf

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["SERVICE", "L2Settings", "l2_options_from_conf", "parse_mappings",
           "settings_from_conf"]

SERVICE = "l2-agent"


@dataclass(frozen=True)
class L2Settings:
    options: L2Options  # the bridge plan's
    meta: MetaSettings  # the qmeta- namespaces' (metadata_mode = distributed)
    # As configured ("" = the agent's own namespace, attached as `meta.fabric`).
    fabric_namespace: str = ""


def parse_mappings(values: list[str]) -> dict[str, str]:
    """`["physnet1:eth1"]` -> {"physnet1": "eth1"}; ValueError names a malformed entry."""
    out: dict[str, str] = {}
    for raw in values:
        physnet, sep, iface = raw.strip().partition(":")
        if not sep or not physnet or not iface:
            raise ValueError(f"[linux_bridge] physical_interface_mappings: {raw!r} is not "
                             "<physical_network>:<interface>")
        out[physnet] = iface
    return out


def l2_options_from_conf(conf: ConfigOpts) -> L2Options:
    return L2Options(host=conf.host, local_ip=conf.vxlan.local_ip or None,
                     enable_vxlan=bool(conf.vxlan.enable_vxlan),
                     udp_dstport=int(conf.vxlan.udp_dstport),
                     physical_interface_mappings=parse_mappings(
                         list(conf.linux_bridge.physical_interface_mappings)))


def settings_from_conf(conf: ConfigOpts) -> L2Settings:
    """L2Settings from `load_config("l2-agent", ...)` (ValueError names a malformed mapping,
    or proxies that would run as root)."""
    configured = str(conf.fabric_namespace or "")
    state = meta_state_path(conf.state_path)
    return L2Settings(
        options=l2_options_from_conf(conf),
        meta=MetaSettings(fabric=configured or HOST_FABRIC_NAME, state_path=state,
                          proxy=proxy_defaults_from_conf(conf, SERVICE, state_path=state)),
        fabric_namespace=configured,
    )
