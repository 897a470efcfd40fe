"""Options of the namespace proxies, shared by every agent that writes or runs one.

The metadata agent, the DHCP and L3 agents and `ns-metadata-proxy` all read the same
`metadata_proxy_socket`/user/group, as in Neutron, so they are defined here once.
"""

from __future__ import annotations

from oslo_config import cfg, types

metadata_proxy_socket = cfg.StrOpt(
    "metadata_proxy_socket",
    default="$state_path/metadata_proxy",
    help="Unix socket between the namespace proxies and the metadata agent.",
)
metadata_proxy_user = cfg.StrOpt(
    "metadata_proxy_user", default="",
    help="User (name or uid) the proxies run as; empty = the agent's effective user.",
)
metadata_proxy_group = cfg.StrOpt(
    "metadata_proxy_group", default="",
    help="Group (name or gid) the proxies run as; empty = the agent's effective group.",
)
metadata_proxy_socket_mode = cfg.StrOpt(
    "metadata_proxy_socket_mode",
    default="deduce",
    choices=["user", "group", "all", "deduce"],
    help="Socket mode: user=0644, group=0664, all=0666, deduce = from the proxy user/group.",
)
SOCKET_OPTS: list[cfg.Opt] = [
    metadata_proxy_socket, metadata_proxy_user, metadata_proxy_group,
    metadata_proxy_socket_mode,
]

metadata_proxy_identity = cfg.StrOpt(
    "metadata_proxy_identity",
    default="agent",
    choices=[
        ("agent", "haproxy stamps its network/router id and forwards to the metadata agent's "
                  "unix socket, which identifies and signs (Neutron's path; any Nova-"
                  "compatible metadata API)"),
        ("haproxy_map", "haproxy identifies the guest itself from a per-namespace map (source "
                        "address -> instance, project, signature) that the metadata agent keeps "
                        "current through haproxy's admin socket, and forwards straight to the "
                        "metadata API (nova_metadata_host/port) with the same four headers"),
    ],
    help="Who identifies the guest on the metadata path. Set the same value for the DHCP, L3, "
         "L2 and metadata agents, which must share state_path (docs/proxy.md, 'Map mode').",
)
IDENTITY_OPTS: list[cfg.Opt] = [metadata_proxy_identity]

metadata_port = cfg.PortOpt(
    "metadata_port", default=9697,
    help="Port the proxy listens on in a router namespace (the REDIRECT target).",
)
pid_file = cfg.StrOpt("pid_file", help="ns-metadata-proxy: pid file of this proxy.")
router_id = cfg.StrOpt("router_id", help="ns-metadata-proxy: the router it serves.")
network_id = cfg.StrOpt("network_id", help="ns-metadata-proxy: the network it serves.")
NS_PROXY_OPTS: list[cfg.Opt] = [pid_file, router_id, network_id]

HAPROXY_OPTS: list[cfg.Opt] = [
    cfg.IntOpt("timeout_connect", default=30, min=1, help="haproxy timeout connect (s)."),
    cfg.IntOpt("timeout_client", default=32, min=1, help="haproxy timeout client (s)."),
    cfg.IntOpt("timeout_server", default=32, min=1, help="haproxy timeout server (s)."),
    cfg.IntOpt("timeout_http_request", default=5, min=1,
               help="haproxy timeout http-request (s): how long a guest may take to send its "
                    "request headers. Neutron uses 30; a guest's HTTP client sends them at once, "
                    "and a short value frees connections an idle client holds."),
    cfg.IntOpt("timeout_http_keep_alive", default=30, min=1,
               help="haproxy timeout http-keep-alive (s)."),
    cfg.IntOpt("max_connections", default=4096, min=1,
               help="haproxy maxconn: connections one proxy holds at once."),
    cfg.IntOpt("max_connections_per_source", default=32, min=0,
               help="Concurrent connections one guest address may hold on a proxy (IPv4 and "
                    "IPv6 alike); more are reset at accept, so one guest cannot exhaust the "
                    "proxy for its neighbours. 0 = no limit. A cloud-init boot uses one."),
    cfg.StrOpt("agent_connection_mode", default="reuse", choices=["reuse", "close"],
               help="How the proxy talks to the agent at metadata_proxy_socket: 'reuse' keeps "
                    "connections open and shares them between guests (openimds's agent); "
                    "'close' opens one per request (http-server-close, no reuse), for an agent "
                    "that closes after every answer such as Neutron's metadata agent."),
    cfg.IntOpt("agent_max_connections", default=None, min=1,
               help="Requests in flight to the agent at once per proxy; more wait in haproxy's "
                    "queue. Default: 32 with 'reuse', 4 with 'close' (an agent that closes "
                    "after every answer accepts only a few at once: Neutron's, with 32 in "
                    "flight, refused 17 % of requests at 64 concurrent guests)."),
]

# The metadata agent's own limiter (openimds/agent/ratelimit.py): a token bucket per
# (network, guest port), IPv4 and IPv6 alike, on by default and sized so a boot never meets it.
AGENT_RATE_LIMIT_OPTS: list[cfg.Opt] = [
    cfg.BoolOpt("instance_rate_limit_enabled", default=True,
                help="Metadata agent: limit each guest (network, port: its IPv4 and IPv6 "
                     "addresses together) with a token bucket; over it = 429 with "
                     "Retry-After."),
    cfg.IntOpt("instance_burst", default=200, min=1,
               help="Requests a guest may make at once (the bucket size). A full cloud-init "
                    "OpenStack read plus EC2 crawl is ~35 requests; 200 leaves more than 3x."),
    cfg.FloatOpt("instance_rate", default=5.0, min=0.001,
                 help="Requests per second a guest may sustain (the refill rate)."),
]

RATE_LIMIT_OPTS: list[cfg.Opt] = [
    cfg.BoolOpt("rate_limit_enabled", default=False,
                help="Rate-limit metadata requests per source address in the proxy."),
    cfg.ListOpt("ip_versions", item_type=types.Integer(choices=[4, 6]), default=[4],
                help="The one IP version rate limiting applies to (4 or 6)."),
    cfg.IntOpt("base_window_duration", default=10, min=1, help="Base window (s)."),
    cfg.IntOpt("base_query_rate_limit", default=10, min=1,
               help="Requests allowed per base window."),
    cfg.IntOpt("burst_window_duration", default=10, min=1, help="Burst window (s)."),
    cfg.IntOpt("burst_query_rate_limit", default=10, min=1,
               help="Requests allowed per burst window."),
]
