"""Map the `[metadata_haproxy]` and `[metadata_rate_limiting]` options to plain values.

The one place a ConfigOpts meets the proxy package: agents' wiring code calls these and hands
the dataclasses to the pure spec helpers.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from openimds.proxy.haproxy import Connections, RateLimit, Timeouts

__all__ = [
    "connections_from_conf",
    "proxy_settings_from_conf",
    "rate_limit_from_conf",
    "timeouts_from_conf",
]

# Requests in flight to an agent that closes after every answer: a few, so a burst waits in
# haproxy's queue instead of being refused by the agent's accept queue.
CLOSE_MODE_AGENT_MAXCONN = 4

LOG = logging.getLogger(__name__)


def timeouts_from_conf(conf: Any) -> Timeouts:
    """`[metadata_haproxy] timeout_*` as Timeouts."""
    g = conf.metadata_haproxy
    return Timeouts(
        connect=int(g.timeout_connect),
        client=int(g.timeout_client),
        server=int(g.timeout_server),
        http_request=int(g.timeout_http_request),
        http_keep_alive=int(g.timeout_http_keep_alive),
    )


def connections_from_conf(conf: Any) -> Connections:
    """`[metadata_haproxy]` connection limits and agent mode as Connections."""
    g = conf.metadata_haproxy
    mode = g.agent_connection_mode
    agent_max = g.agent_max_connections
    if agent_max is None:
        agent_max = Connections.agent_maxconn if mode == "reuse" else CLOSE_MODE_AGENT_MAXCONN
    return Connections(
        maxconn=int(g.max_connections),
        per_source=int(g.max_connections_per_source),
        agent_maxconn=int(agent_max),
        agent_mode=mode,
    )


def rate_limit_from_conf(conf: Any) -> RateLimit | None:
    """`[metadata_rate_limiting]` as a RateLimit, or None when disabled.

    As in Neutron, `ip_versions` must be exactly [4] or [6] (one stick table cannot hold both
    families); anything else is logged and means "no limit", never a proxy that fails to start.
    """
    g = conf.metadata_rate_limiting
    if not g.rate_limit_enabled:
        return None
    versions = list(g.ip_versions or [])
    if versions not in ([4], [6]):
        LOG.warning(
            "[metadata_rate_limiting] ip_versions = %s: rate limiting needs exactly one of 4 "
            "or 6; proxies run without a limit",
            versions,
        )
        return None
    return RateLimit(
        ip_version=versions[0],
        base_window=int(g.base_window_duration),
        base_limit=int(g.base_query_rate_limit),
        burst_window=int(g.burst_window_duration),
        burst_limit=int(g.burst_query_rate_limit),
    )


def proxy_settings_from_conf(conf: Any) -> dict[str, Any]:
    """The proxy fields both agents' settings share (DhcpSettings, RouterSettings), from one
    loaded ConfigOpts: socket, user/group, timeouts, rate limit and the log target."""
    return {
        "metadata_proxy_socket": conf.metadata_proxy_socket,
        "proxy_user": conf.metadata_proxy_user or None,
        "proxy_group": conf.metadata_proxy_group or None,
        "timeouts": timeouts_from_conf(conf),
        "connections": connections_from_conf(conf),
        "rate_limit": rate_limit_from_conf(conf),
        # haproxy logs to syslog; without a /dev/log it would fail to start its logger.
        "proxy_log_target": "/dev/log" if os.path.exists("/dev/log") else None,
    }
