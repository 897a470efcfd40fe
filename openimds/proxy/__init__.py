"""The per-namespace metadata proxy: haproxy config rendering (pure) and supervision."""

from openimds.proxy.haproxy import (
    Bind,
    InvalidProxySpec,
    ProxySpec,
    RateLimit,
    Timeouts,
    config_path,
    pidfile_path,
    proxy_spec_for_network,
    proxy_spec_for_router,
    render_haproxy_cfg,
)
from openimds.proxy.options import rate_limit_from_conf, timeouts_from_conf
from openimds.proxy.supervisor import HaproxySupervisor, Outcome, ProxyStartFailed

__all__ = [
    "Bind",
    "HaproxySupervisor",
    "InvalidProxySpec",
    "Outcome",
    "ProxySpec",
    "ProxyStartFailed",
    "RateLimit",
    "Timeouts",
    "config_path",
    "pidfile_path",
    "proxy_spec_for_network",
    "proxy_spec_for_router",
    "rate_limit_from_conf",
    "render_haproxy_cfg",
    "timeouts_from_conf",
]
