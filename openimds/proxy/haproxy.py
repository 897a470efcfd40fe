"""haproxy configuration for one namespace proxy, as typed values rendered to text.

Pure (no file, process, clock or ConfigOpts access) apart from `owned_proxy_ids`, which reads
the configs on disk to tell their owners. `ProxySpec` holds everything one proxy
needs; `render_haproxy_cfg` turns it into byte-stable text, so the supervisor can decide
"reload or not" by comparing strings (STYLE item 11).

Trust rule: the agent identifies a guest by (X-Neutron-Network-ID | X-Neutron-Router-ID,
X-Forwarded-For). Every identity header a guest could send is deleted before the proxy sets
the one id it stamps; `option forwardfor` *appends*, so the guest's X-Forwarded-For is deleted
first and the agent sees exactly one, written by haproxy (spec neutron-metadata §1.5, §7).

Owner and identity: a proxy belongs to one namespace, `qdhcp-<network>` (kind "network", the
DHCP agent's) or `qrouter-<router>` (kind "router", the L3 agent's), and its files are keyed by
that id. It normally stamps that same id. The one exception is a DHCP "metadata network" (spec
§3.6): owned by the network, it stamps X-Neutron-Router-ID. Its config then carries an
`# owner: network <id>` line, and `config_owner`/`owned_proxy_ids` read ownership from there, so
an L3 agent sharing the state_path never takes that proxy for its own.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from openimds.proxy.hoplimit import listener_response_lines, token_backend_response_lines
from openimds.wire import (
    GUEST_FORWARDED_HEADER,
    IDENTITY_HEADER_PREFIXES,
    IDENTITY_HEADERS,
    INTERNAL_HEADER_PREFIX,
    METADATA_IPV4,
    METADATA_IPV6,
    NETWORK_ID,
    ROUTER_ID,
)

__all__ = [
    "DHCP_METADATA_PORT",
    "IDENTITY_HEADERS",
    "IDENTITY_HEADER_PREFIXES",
    "METADATA_IPV4",
    "METADATA_IPV4_CIDR",
    "METADATA_IPV6",
    "METADATA_IPV6_CIDR",
    "ROUTER_METADATA_PORT",
    "AGENT_MODES",
    "IDENTITY_SOURCES",
    "MAP_VALUE_SEPARATOR",
    "IdentitySource",
    "InstanceLimit",
    "Bind",
    "Connections",
    "InvalidProxySpec",
    "ProxyDefaults",
    "ProxySpec",
    "RateLimit",
    "ResourceKind",
    "Identity",
    "Timeouts",
    "config_owner",
    "config_path",
    "id_header",
    "map_path",
    "owned_proxy_ids",
    "pidfile_path",
    "network_binds",
    "proxy_spec",
    "proxy_spec_for_network",
    "proxy_spec_for_router",
    "render_haproxy_cfg",
    "router_binds",
    "stats_socket_path",
]

ResourceKind = Literal["network", "router"]
AgentMode = Literal["reuse", "close"]
AGENT_MODES: tuple[AgentMode, ...] = ("reuse", "close")
# Who tells the metadata API which instance is asking (`[DEFAULT] metadata_proxy_identity`):
# "agent" = haproxy stamps its network/router id and forwards to the metadata agent's unix
# socket (Neutron's path); "haproxy_map" = haproxy looks the guest's source address up in a map
# the metadata agent keeps current and forwards straight to the metadata API (docs/proxy.md).
IdentitySource = Literal["agent", "haproxy_map"]
IDENTITY_SOURCES: tuple[IdentitySource, ...] = ("agent", "haproxy_map")
# The map value: instance id, project id and signature, joined by a character no id or hex
# signature contains (haproxy's `field` converter splits it again).
MAP_VALUE_SEPARATOR = "|"
# Logging to the agent's stream sink: the ring buffer the lines wait in, its size (a
# couple of seconds of a busy proxy's lines; Pss grows only as far as it is written) and the
# longest line (haproxy's default log line length).
LOG_RING = "openimds-log"
LOG_RING_BYTES = 262144
LOG_LINE_MAX = 1024
# The backend only the token PUT reaches (its answer alone carries the hop limit).
TOKEN_BACKEND = "token_put"

# The same addresses as host routes / interface addresses ("ip/prefix").
METADATA_IPV4_CIDR = f"{METADATA_IPV4}/32"
METADATA_IPV6_CIDR = f"{METADATA_IPV6}/128"
DHCP_METADATA_PORT = 80
ROUTER_METADATA_PORT = 9697

# sun_path is 108 bytes including the NUL.
_MAX_UNIX_PATH = 107
# A socket haproxy binds itself (the stats socket) is first bound as `<path>.<pid>.tmp` and
# then renamed, so that name must fit too ("name too long for UNIX socket (limit usually
# 97)"): 107 minus ".<pid>.tmp" with a pid of up to 7 digits (Linux pid_max <= 4194304).
_MAX_BOUND_UNIX_PATH = _MAX_UNIX_PATH - len(".4194304.tmp")
# Values end up as bare haproxy config tokens: refuse anything that could end a token,
# start a comment or inject a new line. Always fullmatch: `$` would accept a trailing newline.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9._:@/+=-]+")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
# Written only when a proxy stamps another identity than its owner's (see the module doc).
_OWNER_LINE = re.compile(r"^# owner: (network|router) (\S+)$", re.MULTILINE)
_SET_HEADER_LINE = re.compile(r"^\s*http-request set-header (X-Neutron-(?:Network|Router)-ID) ",
                              re.MULTILINE)


class InvalidProxySpec(ValueError):
    """A ProxySpec value cannot be rendered safely; the message names the field and the fix."""


class Bind(NamedTuple):
    """One listening address. `interface` is required for a link-local IPv6 address;
    `v6only` keeps a `::` wildcard from also taking IPv4 (so IPv4 clients keep a plain
    dotted X-Forwarded-For instead of `::ffff:a.b.c.d`)."""

    host: str
    port: int
    interface: str | None = None
    v6only: bool = False


class Identity(NamedTuple):
    """What the proxy stamps on every request: `id_header(kind)` set to `id`."""

    kind: ResourceKind
    id: str


@dataclass(frozen=True)
class Timeouts:
    """`[metadata_haproxy] timeout_*` in seconds (Neutron's, but a short http_request)."""

    connect: int = 30
    client: int = 32
    server: int = 32
    # A guest's HTTP client sends its whole request at once: 5 s is plenty, and a connection
    # that says nothing is closed long before it could matter (Neutron: 30 s).
    http_request: int = 5
    http_keep_alive: int = 30


class InstanceLimit(NamedTuple):
    """`[metadata_rate_limiting] instance_rate` (requests/s sustained) and `instance_burst`."""

    rate: float
    burst: int

    @property
    def window(self) -> int:
        """The sliding window that lets `burst` through at once and `rate` on average:
        burst / rate seconds, at least 1."""
        return max(1, math.ceil(self.burst / self.rate))


@dataclass(frozen=True)
class Connections:
    """`[metadata_haproxy]` connection limits and the way the proxy talks to the agent.

    Defaults are sized for a cloud-init boot, which makes one request at a time on one
    connection: `per_source` concurrent connections per guest address (both families, one
    table) leave room for parallel tools, yet one guest cannot take more than a sliver of
    `maxconn` (haproxy resets the excess at accept). `agent_mode` "reuse" shares kept-alive
    agent connections between guests (openimds's agent); "close" is one agent connection per
    request (`option http-server-close`, no reuse) for an agent that closes after every
    answer, such as Neutron's, with at most `agent_maxconn` in flight.
    """

    maxconn: int = 4096
    per_source: int = 32
    agent_maxconn: int = 32
    agent_mode: AgentMode = "reuse"
    # "haproxy_map": identify guests from the map and forward to `api_servers` (host, port),
    # the first preferred and the others backups, instead of the agent's socket.
    identity: IdentitySource = "agent"
    api_servers: tuple[tuple[str, int], ...] = ()
    # Map mode: the agent's per-instance limit (`instance_rate` /s, `instance_burst` at once)
    # in haproxy; None = off. In the agent's mode the agent applies it itself.
    instance_limit: InstanceLimit | None = None


@dataclass(frozen=True)
class RateLimit:
    """`[metadata_rate_limiting]`: per-source-IP base and burst windows; over the limit = 429.

    haproxy cannot key one stick table on both families, so exactly one `ip_version`.
    """

    ip_version: int = 4
    base_window: int = 10
    base_limit: int = 10
    burst_window: int = 10
    burst_limit: int = 10


@dataclass(frozen=True)
class ProxySpec:
    """Everything one namespace proxy needs, as plain values.

    `kind` and `resource_id` name the owner: the `qdhcp-`/`qrouter-` namespace the proxy
    serves, whose agent ensures and stops it, and the key of its files (config, pid file, admin
    socket). `identity` is what it stamps; None (the usual case) stamps the owner itself.
    """

    kind: ResourceKind
    resource_id: str
    binds: tuple[Bind, ...]
    socket_path: str
    pidfile: str
    user: str | None = None
    group: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    maxconn: int = 4096
    # Concurrent connections per source address (0 = no limit), the rest reset at accept.
    per_source_maxconn: int = 32
    # "reuse": keep-alive agent connections shared between guests; "close": one per request.
    agent_mode: AgentMode = "reuse"
    # Requests in flight to the agent at once from this proxy; more wait in haproxy's queue
    # (up to `timeout connect`) instead of piling onto the agent's listen backlog. Also the
    # most idle agent connections kept (pool-max-conn), so a burst never leaves more than this
    # many fds open on the agent per namespace; pool-purge-delay halves an idle pool every 5 s.
    agent_maxconn: int = 32
    rate_limit: RateLimit | None = None
    # syslog target ("/dev/log", "127.0.0.1:514", "stdout"); None = no logging at all.
    log_target: str | None = "/dev/log"
    # A unix stream socket (the agent's log sink) that takes the lines instead of
    # `log_target`: haproxy logs into a ring buffer and forwards it over one connection, many
    # lines per send, instead of one sendto(2) per request.
    log_stream: str | None = None
    debug: bool = False
    # Admin socket that hands the listening sockets to the next process on reload
    # (`expose-fd listeners` + `haproxy -x`), so a reload never closes the listener.
    stats_socket: str | None = None
    # Another id to stamp than the owner's: a metadata network identifies its router (§3.6).
    identity: Identity | None = None
    # "haproxy_map": the guest is identified from `map_file` (source address -> instance,
    # project, signature) and the request goes to `api_servers`; `socket_path` is unused.
    identity_source: IdentitySource = "agent"
    api_servers: tuple[tuple[str, int], ...] = ()
    map_file: str | None = None
    instance_limit: InstanceLimit | None = None
    # Map mode: haproxy runs in the agent's namespace (where the metadata API is reachable)
    # and opens its listeners in this one (`bind ... namespace`); set by the supervisor.
    bind_netns: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def stamped(self) -> Identity:
        """The identity set on every request (the owner unless `identity` says otherwise)."""
        return self.identity or Identity(self.kind, self.resource_id)


def id_header(kind: ResourceKind) -> str:
    """The header the proxy owns for this kind of namespace."""
    return NETWORK_ID if kind == "network" else ROUTER_ID


def config_owner(text: str) -> ResourceKind | None:
    """Which kind of namespace owns a rendered config: its `# owner:` line, else the kind of
    the header it sets (every proxy that stamps its owner, and configs of older versions)."""
    if m := _OWNER_LINE.search(text):
        return "network" if m.group(1) == "network" else "router"
    if m := _SET_HEADER_LINE.search(text):
        return "network" if m.group(1) == id_header("network") else "router"
    return None


def owned_proxy_ids(state_path: str, kind: ResourceKind) -> list[str]:
    """Ids (sorted) with a proxy config under `state_path` owned by `kind` (`config_owner`).

    The one helper here that reads files: it decides ownership by the same rule the renderer
    writes, so a DHCP and an L3 agent sharing a state_path never stop each other's proxies.
    """
    folder = os.path.dirname(config_path(state_path, "x"))
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if not name.endswith(".conf") or name.startswith("."):
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                text = fh.read()
        except FileNotFoundError:  # stopped meanwhile
            continue
        if config_owner(text) == kind:
            out.append(name[: -len(".conf")])
    return out


def config_path(state_path: str, resource_id: str) -> str:
    """`<state_path>/ns-metadata-proxy/<id>.conf`, Neutron's location."""
    return os.path.join(state_path, "ns-metadata-proxy", f"{resource_id}.conf")


def pidfile_path(state_path: str, resource_id: str) -> str:
    """`<state_path>/external/pids/<id>.pid.haproxy`, Neutron's exact name, so a proxy that
    Neutron left running is found (and replaced or adopted) when openimds takes over."""
    return os.path.join(state_path, "external", "pids", f"{resource_id}.pid.haproxy")


def map_path(state_path: str, resource_id: str) -> str:
    """`<state_path>/ns-metadata-proxy/<id>.map`: the identity map of a proxy in map mode,
    written by the metadata agent (it holds the index and the shared secret)."""
    return os.path.join(state_path, "ns-metadata-proxy", f"{resource_id}.map")


def stats_socket_path(state_path: str, resource_id: str) -> str | None:
    """`<state_path>/ns-metadata-proxy/<id>.sock`, or None when the path would not fit in a
    sockaddr_un (the proxy then reloads with a plain `-sf`, which can reset queued connections)."""
    path = os.path.join(state_path, "ns-metadata-proxy", f"{resource_id}.sock")
    return path if len(path.encode()) <= _MAX_BOUND_UNIX_PATH else None


@dataclass(frozen=True)
class ProxyDefaults:
    """What every proxy one agent writes shares, built once from its config
    (`proxy.options.proxy_defaults_from_conf`): where its files live, the agent socket, the
    user and group, timeouts, connection limits, rate limit and log target. `proxy_spec` adds
    the one namespace's part (owner, binds, stamped identity)."""

    # Root of the proxies' files (config, pid file, admin socket, identity map); the agent's
    # state_path, except the l2-agent's, which keeps its qmeta- proxies apart.
    state_path: str = "/var/lib/openimds"
    socket_path: str = "/var/lib/openimds/metadata_proxy"
    user: str | None = None
    group: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    connections: Connections = field(default_factory=Connections)
    rate_limit: RateLimit | None = None
    # syslog target; None = no logging (an agent always sets one: proxy_log_target).
    log_target: str | None = None
    # The agent's stream sink that takes the lines instead (ProxySpec.log_stream).
    log_stream: str | None = None
    debug: bool = False


def network_binds(port: int = DHCP_METADATA_PORT, ipv6_interface: str | None = None
                  ) -> tuple[Bind, ...]:
    """A `qdhcp-`/`qmeta-` proxy's listeners: 169.254.169.254:port, plus
    [fe80::a9fe:a9fe]:port on `ipv6_interface` when given (the DHCP tap)."""
    binds = [Bind(METADATA_IPV4, port)]
    if ipv6_interface:
        binds.append(Bind(METADATA_IPV6, port, interface=ipv6_interface))
    return tuple(binds)


def router_binds(port: int = ROUTER_METADATA_PORT, ipv6: bool = False) -> tuple[Bind, ...]:
    """A `qrouter-` proxy's listeners: 0.0.0.0:port (the REDIRECT target), plus a v6-only
    `[::]:port` when `ipv6` (guests reaching fe80::a9fe:a9fe via ip6tables REDIRECT)."""
    binds = [Bind("0.0.0.0", port)]
    if ipv6:
        binds.append(Bind("::", port, v6only=True))
    return tuple(binds)


def proxy_spec(
    defaults: ProxyDefaults,
    kind: ResourceKind,
    resource_id: str,
    binds: tuple[Bind, ...],
    *,
    identity: Identity | None = None,
    pidfile: str | None = None,
) -> ProxySpec:
    """The one ProxySpec builder: the agent's `defaults` plus one namespace's owner
    (`kind`, `resource_id`: the key of its files), listeners and, for a metadata network
    (spec §3.6), the identity it stamps instead of its owner's."""
    conns = defaults.connections
    state_path = defaults.state_path
    return ProxySpec(
        kind=kind,
        resource_id=resource_id,
        binds=binds,
        socket_path=defaults.socket_path,
        pidfile=pidfile or pidfile_path(state_path, resource_id),
        user=defaults.user or None,
        group=defaults.group or None,
        timeouts=defaults.timeouts,
        rate_limit=defaults.rate_limit,
        log_target=defaults.log_target,
        log_stream=defaults.log_stream,
        debug=defaults.debug,
        stats_socket=stats_socket_path(state_path, resource_id),
        identity=identity,
        maxconn=conns.maxconn,
        per_source_maxconn=conns.per_source,
        agent_maxconn=conns.agent_maxconn,
        agent_mode=conns.agent_mode,
        **_map_fields(conns, state_path, resource_id),
    )


def proxy_spec_for_network(
    network_id: str,
    *,
    state_path: str,
    socket_path: str,
    port: int = DHCP_METADATA_PORT,
    ipv6_interface: str | None = None,
    user: str | None = None,
    group: str | None = None,
    timeouts: Timeouts | None = None,
    rate_limit: RateLimit | None = None,
    log_target: str | None = "/dev/log",
    debug: bool = False,
    pidfile: str | None = None,
    router_id: str | None = None,
    connections: Connections | None = None,
) -> ProxySpec:
    """`proxy_spec` for a `qdhcp-<network>` namespace, spelled with keywords (the standalone
    proxy command and tests). `router_id` makes it a metadata network's proxy (spec §3.6):
    still the network's (files, ownership), but stamping X-Neutron-Router-ID so the agent
    searches every network of the router."""
    defaults = ProxyDefaults(
        state_path=state_path, socket_path=socket_path, user=user, group=group,
        timeouts=timeouts or Timeouts(), connections=connections or Connections(),
        rate_limit=rate_limit, log_target=log_target, debug=debug)
    return proxy_spec(defaults, "network", network_id, network_binds(port, ipv6_interface),
                      identity=Identity("router", router_id) if router_id else None,
                      pidfile=pidfile)


def proxy_spec_for_router(
    router_id: str,
    *,
    state_path: str,
    socket_path: str,
    port: int = ROUTER_METADATA_PORT,
    ipv6: bool = False,
    user: str | None = None,
    group: str | None = None,
    timeouts: Timeouts | None = None,
    rate_limit: RateLimit | None = None,
    log_target: str | None = "/dev/log",
    debug: bool = False,
    pidfile: str | None = None,
    connections: Connections | None = None,
) -> ProxySpec:
    """`proxy_spec` for a `qrouter-<router>` namespace, spelled with keywords (the standalone
    proxy command and tests)."""
    defaults = ProxyDefaults(
        state_path=state_path, socket_path=socket_path, user=user, group=group,
        timeouts=timeouts or Timeouts(), connections=connections or Connections(),
        rate_limit=rate_limit, log_target=log_target, debug=debug)
    return proxy_spec(defaults, "router", router_id, router_binds(port, ipv6), pidfile=pidfile)


def _map_fields(conns: Connections, state_path: str, resource_id: str) -> dict[str, Any]:
    if conns.identity != "haproxy_map":
        return {}
    return {"identity_source": conns.identity, "api_servers": conns.api_servers,
            "map_file": map_path(state_path, resource_id),
            "instance_limit": conns.instance_limit}


def render_haproxy_cfg(spec: ProxySpec) -> str:
    """The complete haproxy.cfg for `spec`; the same spec always gives the same bytes."""
    t = spec.timeouts
    lines: list[str] = [
        "# Generated by openimds for the metadata proxy; changes are overwritten.",
    ]
    stamped = spec.stamped
    map_mode = spec.identity_source == "haproxy_map"
    # Map mode sets no X-Neutron-* header to read ownership from: always an owner line, and the
    # identity whose guests the metadata agent writes into the map (agent/maps.py reads it).
    if stamped != (spec.kind, spec.resource_id) or map_mode:
        lines.append(f"# owner: {spec.kind} {spec.resource_id}")
    if map_mode:
        lines.append(f"# identity-map: {stamped.kind} {stamped.id} {spec.map_file}")
    lines.append("global")
    logging_on = bool(spec.log_target or spec.log_stream)
    if logging_on:
        target = f"ring@{LOG_RING}" if spec.log_stream else spec.log_target
        lines.append(f"    log         {target} local0 {'debug' if spec.debug else 'info'}")
        # A tag starting with "haproxy" lets Debian's rsyslog route it to haproxy.log.
        lines.append(f"    log-tag     haproxy-metadata-proxy-{spec.resource_id}")
    if spec.user:
        lines.append(_user_line("user", "uid", spec.user))
    if spec.group:
        lines.append(_user_line("group", "gid", spec.group))
    lines += [
        f"    maxconn     {spec.maxconn}",
        # One thread: half the memory of the per-core default, and one proxy serves one network.
        "    nbthread    1",
        f"    pidfile     {spec.pidfile}",
        "    daemon",
    ]
    if spec.stats_socket:
        lines.append(
            f"    stats socket {spec.stats_socket} mode 600 level admin expose-fd listeners"
        )
    if spec.log_stream:
        lines += [
            "",
            # The lines wait here while the agent is away (the oldest are overwritten when it
            # is full, never blocking a request) and go out on one connection, in bulk.
            f"ring {LOG_RING}",
            "    format      rfc3164",
            f"    maxlen      {LOG_LINE_MAX}",
            f"    size        {LOG_RING_BYTES}",
            "    timeout connect 5s",
            f"    timeout server  {t.server}s",
            f"    server      sink unix@{spec.log_stream}",
        ]
    lines += ["", "defaults"]
    if logging_on:
        lines += ["    log global", "    option httplog", "    option dontlognull"]
    lines += [
        "    mode http",
    ]
    if map_mode:
        lines += [
            # Straight to the metadata API, whose connections carry no per-connection state
            # either: shared keep-alive connections, as with the agent. A connection the API
            # closed while idle is retried on a new one (not a POST: it may have been sent).
            "    option http-keep-alive",
            "    http-reuse always",
            "    retry-on conn-failure empty-response",
        ]
    elif spec.agent_mode == "reuse":
        lines += [
            # Keep connections to the agent open and share them between guests' requests: the
            # identity travels in per-request headers (deleted, set and appended below for
            # every request), and the agent keeps no per-connection state, so any idle
            # connection may carry any guest's next request. "always" (not "safe") also lets
            # the first request of a new guest connection (cloud-init opens one per request)
            # use an idle connection.
            "    option http-keep-alive",
            "    http-reuse always",
        ]
    else:
        # An agent that closes after every answer (Neutron's): a reused connection could be
        # one it is closing, so one agent connection per request and never a shared one.
        lines += ["    option http-server-close", "    http-reuse never"]
    lines += [
        "    option forwardfor",
        "    retries                 3",
        f"    timeout http-request    {t.http_request}s",
        f"    timeout connect         {t.connect}s",
        f"    timeout client          {t.client}s",
        f"    timeout server          {t.server}s",
        f"    timeout http-keep-alive {t.http_keep_alive}s",
    ]
    if spec.per_source_maxconn:
        # One ipv6-keyed table holds both families (haproxy maps an IPv4 source to
        # ::ffff:a.b.c.d); the limit is per source address.
        lines += [
            "",
            "backend per_source_connections",
            "    stick-table type ipv6 size 100k expire 60s store conn_cur",
        ]
    il = _instance_limit(spec)
    if il is not None:
        lines += [
            "",
            "backend instance_rate_limiter",
            f"    stick-table type string len 64 size 100k expire {il.window}s"
            f" store http_req_rate({il.window}s)",
        ]
    rl = spec.rate_limit
    if rl is not None:
        table = "ip" if rl.ip_version == 4 else "ipv6"
        expire = max(rl.base_window, rl.burst_window)
        lines += [
            "",
            "backend base_rate_limiter",
            f"    stick-table type {table} size 10k expire {expire}s"
            f" store http_req_rate({rl.base_window}s)",
            "",
            "backend burst_rate_limiter",
            f"    stick-table type {table} size 10k expire {expire}s"
            f" store http_req_rate({rl.burst_window}s)",
        ]
    servers = _api_server_lines(spec) if map_mode else [_agent_server_line(spec)]
    lines += [
        "",
        # The token PUT's own backend: only its answer carries a hop limit, so only PUTs run
        # the 64 set-tos rules (every other answer skips them: ~3 us per request of haproxy's
        # CPU). Same servers as the listener's; health comes from the listener's checks.
        f"backend {TOKEN_BACKEND}",
        *token_backend_response_lines(),
        *_tracking(servers),
    ]
    lines += ["", "listen listener"]
    lines += [f"    bind {_bind(b, spec.bind_netns)}" for b in spec.binds]
    if spec.per_source_maxconn:
        # At accept, before a byte is read: a guest over its share is reset at once and never
        # holds a slot another guest needs (issue 16, defect 3).
        lines += [
            "    tcp-request connection track-sc2 src table per_source_connections",
            "    tcp-request connection reject"
            f" if {{ sc2_conn_cur(per_source_connections) gt {spec.per_source_maxconn} }}",
        ]
    if rl is not None:
        lines += [
            "    http-request track-sc0 src table base_rate_limiter",
            "    http-request track-sc1 src table burst_rate_limiter",
            "    http-request deny deny_status 429"
            f" if {{ src_http_req_rate(base_rate_limiter) gt {rl.base_limit} }}",
            "    http-request deny deny_status 429"
            f" if {{ src_http_req_rate(burst_rate_limiter) gt {rl.burst_limit} }}",
        ]
    # Deletion runs before set-header and before forwardfor appends the real client address;
    # the guest's X-Forwarded-For is noted (internal header) before it goes.
    lines.append(f"    http-request del-header {INTERNAL_HEADER_PREFIX} -m beg")
    lines.append(f"    http-request set-header {GUEST_FORWARDED_HEADER} 1"
                 " if { req.hdr_cnt(X-Forwarded-For) gt 0 }")
    lines += [f"    http-request del-header {name}" for name in IDENTITY_HEADERS]
    lines += [f"    http-request del-header {p} -m beg" for p in IDENTITY_HEADER_PREFIXES]
    # The token PUT's hop limit: internal header → DSCP → TTL (proxy/hoplimit.py); set-tos
    # needs no privilege, so it holds for proxies running as an unprivileged user too.
    lines += listener_response_lines()
    if map_mode:
        lines += _map_identity_lines(spec)
    else:
        lines.append(f"    http-request set-header {id_header(stamped.kind)} {stamped.id}")
    lines.append(f"    use_backend {TOKEN_BACKEND} if METH_PUT")
    lines += servers
    return "\n".join(lines) + "\n"


def _agent_server_line(spec: ProxySpec) -> str:
    server = f"    server metadata {spec.socket_path} maxconn {spec.agent_maxconn}"
    if spec.agent_mode == "reuse":
        server += f" pool-max-conn {spec.agent_maxconn} pool-purge-delay 5s"
    return server


def _api_server_lines(spec: ProxySpec) -> list[str]:
    lines = []
    for i, (host, port) in enumerate(spec.api_servers):
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        line = (f"    server api{i} {addr} maxconn {spec.agent_maxconn}"
                f" pool-max-conn {spec.agent_maxconn} pool-purge-delay 5s")
        if len(spec.api_servers) > 1:
            # Failover in the configured order, as the agent does: the first while it answers.
            line += " check inter 2s" + (" backup" if i else "")
        lines.append(line)
    return lines


def _tracking(servers: list[str]) -> list[str]:
    """The listener's server lines for the token backend: a checked server there follows the
    listener's check (`track`) instead of running a second health check of its own."""
    out = []
    for line in servers:
        if " check inter 2s" in line:
            name = line.split()[1]
            line = line.replace(" check inter 2s", f" track listener/{name}")
        out.append(line)
    return out


def _map_identity_lines(spec: ProxySpec) -> list[str]:
    """Map mode: the guest's source address -> instance|project|signature (the metadata
    agent's resolution of that address in this namespace), stamped as the four headers Nova
    expects; X-Forwarded-For is the source itself (`option forwardfor`, the guest's copy
    deleted above). An address the map lacks is answered 404 here, as the agent would."""
    stamped = spec.stamped
    sep = MAP_VALUE_SEPARATOR
    lines = [
        f"    http-request set-var(txn.guest) src,map_ip({spec.map_file})",
        '    http-request return status 404 content-type "text/plain; charset=utf-8"'
        f' string "Instance was not found on {stamped.kind} {stamped.id}."'
        " if !{ var(txn.guest) -m found }",
        # A POST (the password) is never sent twice.
        "    http-request disable-l7-retry if METH_POST",
        f"    http-request set-header X-Instance-ID %[var(txn.guest),field(1,{sep})]",
        f"    http-request set-header X-Tenant-ID %[var(txn.guest),field(2,{sep})]",
        f"    http-request set-header X-Instance-ID-Signature %[var(txn.guest),field(3,{sep})]",
    ]
    il = _instance_limit(spec)
    if il is not None:
        # Keyed by the instance: its IPv4, IPv6 and link-local addresses share one budget, as
        # with the agent's token bucket; a sliding window of burst/rate seconds holding at most
        # `burst` requests allows the same burst and the same sustained rate.
        lines += [
            f"    http-request track-sc0 var(txn.guest),field(1,{sep})"
            " table instance_rate_limiter",
            "    http-request deny deny_status 429 content-type \"text/plain; charset=utf-8\""
            " string \"Too many requests from this instance; slow down.\""
            f" hdr Retry-After {max(1, math.ceil(1 / il.rate))}"
            f" if {{ sc0_http_req_rate(instance_rate_limiter) gt {il.burst} }}",
        ]
    return lines


def _instance_limit(spec: ProxySpec) -> InstanceLimit | None:
    """The per-instance limit map mode renders: it needs sticky counter 0, which Neutron's
    per-source limiter (`rate_limit_enabled`) holds when on; that one then applies alone."""
    if spec.identity_source != "haproxy_map" or spec.rate_limit is not None:
        return None
    return spec.instance_limit


def _bind(b: Bind, netns: str | None = None) -> str:
    addr = ipaddress.ip_address(b.host)
    text = f"[{b.host}]:{b.port}" if addr.version == 6 else f"{b.host}:{b.port}"
    if netns:
        text += f" namespace {netns}"
    if b.interface:
        text += f" interface {b.interface}"
    if b.v6only:
        text += " v6only"
    return text


def _user_line(name_kw: str, id_kw: str, value: str) -> str:
    # Seeds pass numeric ids (--metadata_proxy_user=998); haproxy takes those as uid/gid, so
    # no passwd lookup is needed here.
    return f"    {id_kw:<11} {value}" if value.isdigit() else f"    {name_kw:<11} {value}"


def _validate(spec: ProxySpec) -> None:
    if spec.kind not in ("network", "router"):
        raise InvalidProxySpec(f"kind must be 'network' or 'router', not {spec.kind!r}")
    if not _SAFE_ID.fullmatch(spec.resource_id):
        raise InvalidProxySpec(
            f"resource_id {spec.resource_id!r} must be a UUID-like token (letters, digits, . _ -)"
        )
    if spec.identity is not None:
        if spec.identity.kind not in ("network", "router"):
            raise InvalidProxySpec(
                f"identity kind must be 'network' or 'router', not {spec.identity.kind!r}"
            )
        if not _SAFE_ID.fullmatch(spec.identity.id):
            raise InvalidProxySpec(
                f"identity id {spec.identity.id!r} must be a UUID-like token (letters, digits, . _ -)"
            )
    if not spec.binds:
        raise InvalidProxySpec("binds is empty: give at least one (host, port) to listen on")
    for b in spec.binds:
        try:
            addr = ipaddress.ip_address(b.host)
        except ValueError as exc:
            raise InvalidProxySpec(f"bind host {b.host!r} is not an IP address") from exc
        if not 0 < b.port < 65536:
            raise InvalidProxySpec(f"bind port {b.port} is outside 1..65535")
        if addr.version == 6 and addr.is_link_local and not b.interface:
            raise InvalidProxySpec(f"link-local bind {b.host} needs an interface name")
        if b.interface is not None and not _SAFE_ID.fullmatch(b.interface):
            raise InvalidProxySpec(f"interface {b.interface!r} is not a valid interface name")
        if b.v6only and addr.version != 6:
            raise InvalidProxySpec(f"v6only makes no sense on IPv4 bind {b.host}")
    for name in ("socket_path", "pidfile"):
        value = getattr(spec, name)
        if not os.path.isabs(value) or not _SAFE_TOKEN.fullmatch(value):
            raise InvalidProxySpec(f"{name} {value!r} must be an absolute path without spaces")
    if len(spec.socket_path.encode()) > _MAX_UNIX_PATH:
        raise InvalidProxySpec(
            f"socket_path {spec.socket_path!r} is longer than {_MAX_UNIX_PATH} bytes; "
            "unix sockets cannot be that long, choose a shorter metadata_proxy_socket"
        )
    if spec.stats_socket is not None and (
        not os.path.isabs(spec.stats_socket)
        or not _SAFE_TOKEN.fullmatch(spec.stats_socket)
        or len(spec.stats_socket.encode()) > _MAX_BOUND_UNIX_PATH
    ):
        raise InvalidProxySpec(f"stats_socket {spec.stats_socket!r} is not a usable socket path")
    for name in ("user", "group"):
        value = getattr(spec, name)
        if value is not None and not _SAFE_ID.fullmatch(value):
            raise InvalidProxySpec(f"{name} {value!r} must be a user/group name or numeric id")
    if spec.log_target is not None and not _SAFE_TOKEN.fullmatch(spec.log_target):
        raise InvalidProxySpec(f"log_target {spec.log_target!r} must be one token")
    if spec.log_stream is not None and not (
            spec.log_stream.startswith("/") and _SAFE_TOKEN.fullmatch(spec.log_stream)
            and len(spec.log_stream.encode()) <= _MAX_UNIX_PATH):
        raise InvalidProxySpec(
            f"log_stream {spec.log_stream!r} must be an absolute unix socket path of one token"
            f" and at most {_MAX_UNIX_PATH} bytes")
    if spec.maxconn < 1:
        raise InvalidProxySpec("maxconn must be at least 1")
    if spec.agent_maxconn < 1:
        raise InvalidProxySpec("agent_maxconn must be at least 1")
    if spec.per_source_maxconn < 0:
        raise InvalidProxySpec("per_source_maxconn must be 0 (no limit) or more")
    if spec.identity_source not in IDENTITY_SOURCES:
        raise InvalidProxySpec(f"identity_source must be one of {', '.join(IDENTITY_SOURCES)}, "
                               f"not {spec.identity_source!r}")
    if spec.identity_source == "haproxy_map":
        if not spec.api_servers:
            raise InvalidProxySpec("map mode needs the metadata API's address (api_servers: "
                                   "nova_metadata_host and nova_metadata_port)")
        for host, port in spec.api_servers:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if not _SAFE_ID.fullmatch(host):
                    raise InvalidProxySpec(f"api server host {host!r} is not an address or "
                                           "host name") from None
            if not 0 < port < 65536:
                raise InvalidProxySpec(f"api server port {port} is outside 1..65535")
        if spec.map_file is None or not os.path.isabs(spec.map_file) \
                or not _SAFE_TOKEN.fullmatch(spec.map_file):
            raise InvalidProxySpec(f"map_file {spec.map_file!r} must be an absolute path "
                                   "without spaces")
        if spec.stats_socket is None:
            raise InvalidProxySpec("map mode needs the admin socket (the metadata agent updates "
                                   "the map through it): choose a shorter state_path")
    if spec.instance_limit is not None and (spec.instance_limit.rate <= 0
                                            or spec.instance_limit.burst < 1):
        raise InvalidProxySpec("instance limit needs a rate > 0 and a burst >= 1")
    if spec.bind_netns is not None and not _SAFE_ID.fullmatch(spec.bind_netns):
        raise InvalidProxySpec(f"bind_netns {spec.bind_netns!r} is not a namespace name")
    if spec.agent_mode not in AGENT_MODES:
        raise InvalidProxySpec(
            f"agent_mode must be one of {', '.join(AGENT_MODES)}, not {spec.agent_mode!r}"
        )
    t = spec.timeouts
    for name in ("connect", "client", "server", "http_request", "http_keep_alive"):
        if getattr(t, name) < 1:
            raise InvalidProxySpec(f"timeout {name} must be at least 1 second")
    rl = spec.rate_limit
    if rl is not None:
        if rl.ip_version not in (4, 6):
            raise InvalidProxySpec(
                f"rate limit ip_version must be exactly 4 or 6, not {rl.ip_version}: haproxy "
                "cannot key one stick table on both families"
            )
        for name in ("base_window", "base_limit", "burst_window", "burst_limit"):
            if getattr(rl, name) < 1:
                raise InvalidProxySpec(f"rate limit {name} must be at least 1")
