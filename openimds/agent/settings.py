"""AgentSettings: the plain values the agent runs on, built once from metadata_agent.ini.

Pure code takes this dataclass, never the ConfigOpts (STYLE anti-pattern 3).
`settings_from_conf` (also `from_conf`) is the only place that reads options, and it resolves the
deduced socket mode, user and group ids and the upstream URL list there, so a wrong user name
stops the agent at start, not at first request.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from openimds.agent.ratelimit import BucketPolicy
from openimds.proxy.options import default_proxy_user

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["SOCKET_MODES", "AgentSettings", "deduce_socket_mode", "from_conf",
           "settings_from_conf", "upstream_base_urls"]

SOCKET_MODES = {"user": 0o644, "group": 0o664, "all": 0o666}


@dataclass(frozen=True)
class AgentSettings:
    socket_path: str
    shared_secret: str = ""
    upstream_urls: tuple[str, ...] = ("http://127.0.0.1:8775",)
    socket_mode: int = 0o644
    socket_uid: int | None = None  # chown target; None = leave as created
    socket_gid: int | None = None
    workers: int = 1
    backlog: int = 4096
    # TLS towards the metadata API (Neutron's meaning of these options, spec 1.7).
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    insecure: bool = False
    # Below haproxy's `timeout server` (32 s) so the guest gets our 503, not haproxy's 504.
    upstream_timeout: float = 30.0
    upstream_connect_timeout: float = 5.0
    # Control-plane credentials (the seed's REST-era options).
    auth_url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    project_name: str | None = None
    auth_region: str | None = None
    auth_insecure: bool = False
    auth_ca_cert: str | None = None
    # Token bucket per (network, guest port); None = no limit.
    rate_limit: BucketPolicy | None = None
    # metadata_agent_scope = host: resolve only ports bound to this host name (None = all).
    index_host: str | None = None
    # metadata_proxy_identity = haproxy_map: keep the proxies' identity maps under state_path.
    proxy_identity: str = "agent"
    state_path: str = ""


def upstream_base_urls(protocol: str, host: str, port: int, urls: list[str] | tuple[str, ...]
                       ) -> tuple[str, ...]:
    """`nova_metadata_urls` when set (failover order), else one URL per host of
    `nova_metadata_host` (a comma list of replicas) on `port` with `protocol`."""
    if urls:
        return tuple(u.rstrip("/") for u in urls)
    out = []
    for name in (h.strip() for h in host.split(",")):
        try:
            is_v6 = ipaddress.ip_address(name).version == 6
        except ValueError:
            is_v6 = False
        shown = f"[{name}]" if is_v6 else name
        out.append(f"{protocol}://{shown}:{port}")
    return tuple(out)


def _is_effective_user(user: str) -> bool:
    euid = os.geteuid()
    if user == str(euid):
        return True
    try:
        return pwd.getpwuid(euid).pw_name == user
    except KeyError:
        return False


def _is_effective_group(group: str) -> bool:
    egid = os.getegid()
    if group == str(egid):
        return True
    try:
        return grp.getgrgid(egid).gr_name == group
    except KeyError:
        return False


def deduce_socket_mode(mode: str, proxy_user: str, proxy_group: str) -> int:
    """Neutron's rule: `deduce` gives user (0644) when the proxies run as us or root, group
    (0664) when they share our group, else all (0666)."""
    if mode != "deduce":
        return SOCKET_MODES[mode]
    if not proxy_user or proxy_user in ("0", "root") or _is_effective_user(proxy_user):
        return SOCKET_MODES["user"]
    if not proxy_group or _is_effective_group(proxy_group):
        return SOCKET_MODES["group"]
    return SOCKET_MODES["all"]


def _uid(user: str) -> int | None:
    if not user:
        return None
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"metadata_proxy_user: no such user {user!r}") from None


def _gid(group: str) -> int | None:
    if not group:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"metadata_proxy_group: no such group {group!r}") from None


def settings_from_conf(conf: ConfigOpts) -> AgentSettings:
    """Build AgentSettings from `load_config("metadata-agent", ...)`. ValueError names a bad
    user/group."""
    workers = conf.metadata_workers
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) // 2)
    return AgentSettings(
        socket_path=conf.metadata_proxy_socket,
        shared_secret=conf.metadata_proxy_shared_secret or "",
        upstream_urls=upstream_base_urls(conf.nova_metadata_protocol, conf.nova_metadata_host,
                                         conf.nova_metadata_port, conf.nova_metadata_urls),
        # The user the DHCP/L3 agents' proxies really run as (a root agent drops them to a
        # dedicated user), so `deduce` opens the socket to their group.
        socket_mode=deduce_socket_mode(conf.metadata_proxy_socket_mode,
                                       default_proxy_user(conf.metadata_proxy_user),
                                       conf.metadata_proxy_group),
        socket_uid=_uid(conf.metadata_proxy_user),
        socket_gid=_gid(conf.metadata_proxy_group),
        # 0 means "serve in the main process" in Neutron; one process either way here.
        workers=max(1, workers),
        backlog=conf.metadata_backlog,
        ca_cert=conf.auth_ca_cert or None,
        client_cert=conf.nova_client_cert or None,
        client_key=conf.nova_client_priv_key or None,
        insecure=conf.nova_metadata_insecure,
        upstream_timeout=float(max(1, conf.metadata_haproxy.timeout_server - 2)),
        auth_url=conf.auth_url,
        username=conf.admin_user,
        password=conf.admin_password,
        project_name=conf.admin_tenant_name,
        auth_region=conf.auth_region or None,
        auth_insecure=conf.auth_insecure,
        auth_ca_cert=conf.auth_ca_cert or None,
        rate_limit=_rate_limit(conf),
        index_host=conf.host if conf.metadata_agent_scope == "host" else None,
        proxy_identity=conf.metadata_proxy_identity,
        state_path=conf.state_path,
    )


def _rate_limit(conf: ConfigOpts) -> BucketPolicy | None:
    g = conf.metadata_rate_limiting
    if not g.instance_rate_limit_enabled:
        return None
    return BucketPolicy(rate=float(g.instance_rate), burst=int(g.instance_burst))


# The name this module had first (the agent's package exports it).
from_conf = settings_from_conf
