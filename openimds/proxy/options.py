"""Map the `[metadata_haproxy]` and `[metadata_rate_limiting]` options to plain values.

The one place a ConfigOpts meets the proxy package: agents' wiring code calls these and hands
the dataclasses to the pure spec helpers.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from openimds.linux.logsink import stream_socket_path
from openimds.proxy.haproxy import (
    Connections,
    IdentitySource,
    InstanceLimit,
    ProxyDefaults,
    RateLimit,
    Timeouts,
)

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = [
    "DEV_LOG",
    "api_servers_from_conf",
    "connections_from_conf",
    "default_proxy_user",
    "log_sink_path",
    "proxy_log_stream",
    "proxy_log_target",
    "proxy_defaults_from_conf",
    "rate_limit_from_conf",
    "timeouts_from_conf",
]

# Requests in flight to an agent that closes after every answer: a few, so a burst waits in
# haproxy's queue instead of being refused by the agent's accept queue.
CLOSE_MODE_AGENT_MAXCONN = 4

LOG = logging.getLogger(__name__)


def timeouts_from_conf(conf: ConfigOpts) -> Timeouts:
    """`[metadata_haproxy] timeout_*` as Timeouts."""
    g = conf.metadata_haproxy
    return Timeouts(
        connect=int(g.timeout_connect),
        client=int(g.timeout_client),
        server=int(g.timeout_server),
        http_request=int(g.timeout_http_request),
        http_keep_alive=int(g.timeout_http_keep_alive),
    )


DEV_LOG = "/dev/log"
# Tried in order when the agent runs as root and metadata_proxy_user is empty: Debian's haproxy
# package creates the first; every system has the second.
DEDICATED_USERS = ("haproxy", "nobody")
_MAX_UNIX_PATH = 107


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def default_proxy_user(
    configured: str,
    *,
    euid: int | None = None,
    user_exists: Callable[[str], bool] = _user_exists,
) -> str:
    """The user the proxies run as. `metadata_proxy_user` when set; else Neutron's "the
    agent's effective user", which needs no `user` line ("") when the agent is unprivileged;
    an agent running as root never leaves haproxy as root, but drops it to a dedicated user
    (its group stays the agent's, so it can reach the agent's group-writable socket)."""
    if configured:
        return configured
    if (os.geteuid() if euid is None else euid) != 0:
        return ""
    for name in DEDICATED_USERS:
        if user_exists(name):
            return name
    raise ValueError(
        "haproxy would run as root: no user "
        f"{' or '.join(DEDICATED_USERS)} exists; set metadata_proxy_user"
    )


def log_sink_path(state_path: str, service: str) -> str:
    """The agent's syslog sink for its proxies when there is no /dev/log (linux/logsink.py)."""
    return os.path.join(state_path, "ns-metadata-proxy", f"{service}-log.sock")


def proxy_log_target(state_path: str, service: str | None, *, dev_log: bool) -> str | None:
    """Where the proxies log: the host's syslog when it has one, else the agent's own sink
    (so the lines land in the agent's log); None only without an agent to receive them (the
    standalone ns-metadata-proxy) or a sink path too long for a unix socket."""
    if dev_log:
        return DEV_LOG
    if service is None:
        return None
    path = log_sink_path(state_path, service)
    return path if len(path.encode()) <= _MAX_UNIX_PATH else None


def proxy_log_stream(log_target: str | None) -> str | None:
    """The agent's stream sink beside its datagram sink `log_target` (linux/logsink.py), where
    its proxies forward their lines in bulk; None when they log to the host's syslog, not at
    all, or the path would not fit a unix socket address."""
    if log_target is None or log_target == DEV_LOG:
        return None
    path = stream_socket_path(log_target)
    return path if len(path.encode()) <= _MAX_UNIX_PATH else None


def connections_from_conf(conf: ConfigOpts) -> Connections:
    """`[metadata_haproxy]` connection limits and agent mode as Connections."""
    g = conf.metadata_haproxy
    mode = g.agent_connection_mode
    agent_max = g.agent_max_connections
    if agent_max is None:
        agent_max = Connections.agent_maxconn if mode == "reuse" else CLOSE_MODE_AGENT_MAXCONN
    # Not registered for every service that writes a proxy: absent means the agent's path.
    identity: IdentitySource = "haproxy_map" if getattr(
        conf, "metadata_proxy_identity", "agent") == "haproxy_map" else "agent"
    return Connections(
        maxconn=int(g.max_connections),
        per_source=int(g.max_connections_per_source),
        agent_maxconn=int(agent_max),
        agent_mode=mode,
        identity=identity,
        api_servers=api_servers_from_conf(conf) if identity == "haproxy_map" else (),
        instance_limit=_instance_limit(conf) if identity == "haproxy_map" else None,
    )


def _instance_limit(conf: ConfigOpts) -> InstanceLimit | None:
    """Map mode: the metadata agent's per-instance limit, applied by the proxies instead."""
    g = conf.metadata_rate_limiting
    if not getattr(g, "instance_rate_limit_enabled", False):
        return None
    return InstanceLimit(rate=float(g.instance_rate), burst=int(g.instance_burst))


def api_servers_from_conf(conf: ConfigOpts) -> tuple[tuple[str, int], ...]:
    """Map mode: the metadata API's (host, port) in failover order, from the same options the
    metadata agent reads (`nova_metadata_urls`, else `nova_metadata_host` on
    `nova_metadata_port`). ValueError for https: the proxies speak plain HTTP to the API."""
    urls = list(conf.nova_metadata_urls or [])
    if urls:
        out = []
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"metadata_proxy_identity = haproxy_map: nova_metadata_urls "
                                 f"entry {url!r} must be http://host[:port] (no TLS, no path)")
            out.append((parts.hostname, parts.port or 80))
        return tuple(out)
    if conf.nova_metadata_protocol != "http":
        raise ValueError("metadata_proxy_identity = haproxy_map: the proxies reach the metadata "
                         "API over plain HTTP; nova_metadata_protocol must be http")
    port = int(conf.nova_metadata_port)
    return tuple((h.strip(), port) for h in str(conf.nova_metadata_host).split(",") if h.strip())


def rate_limit_from_conf(conf: ConfigOpts) -> RateLimit | None:
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


def proxy_defaults_from_conf(conf: ConfigOpts, service: str | None = None, *,
                             state_path: str | None = None) -> ProxyDefaults:
    """The one ProxyDefaults of an agent (DHCP, L3, L2), from its loaded ConfigOpts: socket,
    user/group, timeouts, connections, rate limit and the log target (`service` names the
    agent whose log sink receives the proxies' lines when there is no /dev/log).
    `state_path` is where the proxies' files go when not the agent's own state_path."""
    log_target = proxy_log_target(conf.state_path, service, dev_log=os.path.exists(DEV_LOG))
    return ProxyDefaults(
        state_path=str(state_path or conf.state_path),
        socket_path=str(conf.metadata_proxy_socket),
        user=default_proxy_user(conf.metadata_proxy_user) or None,
        group=conf.metadata_proxy_group or None,
        timeouts=timeouts_from_conf(conf),
        connections=connections_from_conf(conf),
        rate_limit=rate_limit_from_conf(conf),
        log_target=log_target,
        log_stream=proxy_log_stream(log_target),
    )
