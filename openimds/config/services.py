"""Which options each service reads: service name -> (section, options) pairs.

"all-in-one" is the union, for one process (or one check) that runs every part.
"""

from __future__ import annotations

from collections.abc import Sequence

from oslo_config import cfg

from openimds.config.opts import (
    agent,
    common,
    control_api,
    dhcp,
    guest,
    l2,
    l3,
    metadata_api,
    ml2,
    proxy,
)

Registration = tuple[str, Sequence[cfg.Opt]]  # (section, options); "DEFAULT" for the top

_COMMON: list[Registration] = [("DEFAULT", common.DEFAULT_OPTS),
                               ("database", common.DATABASE_OPTS)]
_PROXY_WRITER: list[Registration] = [
    ("DEFAULT", proxy.SOCKET_OPTS),
    # Map mode: the proxies forward straight to the metadata API, so their writers read its
    # address (the same options as metadata_agent.ini).
    ("DEFAULT", proxy.IDENTITY_OPTS),
    ("DEFAULT", [agent.nova_metadata_host, agent.nova_metadata_port,
                 agent.nova_metadata_protocol, agent.nova_metadata_urls]),
    ("metadata_haproxy", proxy.HAPROXY_OPTS),
    ("metadata_rate_limiting", proxy.RATE_LIMIT_OPTS),
    # Map mode: the proxies apply the agent's per-instance limit (docs/proxy.md).
    ("metadata_rate_limiting", proxy.AGENT_RATE_LIMIT_OPTS),
]
_AGENT: list[Registration] = [("DEFAULT", agent.AUTH_OPTS), ("AGENT", agent.AGENT_STATE_OPTS),
                               ("DEFAULT", agent.HOST_OPTS)]

_BY_SERVICE: dict[str, list[Registration]] = {
    # The metadata listener's options too: the token catalog names the metadata endpoint.
    "control-api": [
        *_COMMON,
        ("DEFAULT", control_api.DEFAULT_OPTS),
        ("DEFAULT", guest.DEFAULT_OPTS),
        ("DEFAULT", [metadata_api.metadata_listen, metadata_api.metadata_listen_port]),
        ("metadata", guest.METADATA_OPTS),
        *ml2.REGISTRATIONS,
    ],
    "metadata-api": [
        *_COMMON,
        ("DEFAULT", metadata_api.DEFAULT_OPTS),
        ("neutron", metadata_api.NEUTRON_OPTS),
        ("api", metadata_api.API_OPTS),
        ("DEFAULT", guest.DEFAULT_OPTS),
        ("metadata", guest.METADATA_OPTS),
    ],
    "metadata-agent": [
        *_COMMON,
        *_AGENT,
        ("DEFAULT", agent.METADATA_AGENT_OPTS),
        ("DEFAULT", [metadata_api.metadata_workers]),
        ("DEFAULT", proxy.SOCKET_OPTS),
        ("DEFAULT", proxy.IDENTITY_OPTS),
        ("metadata_haproxy", proxy.HAPROXY_OPTS),
        ("metadata_rate_limiting", proxy.AGENT_RATE_LIMIT_OPTS),
    ],
    "dhcp-agent": [*_COMMON, *_AGENT, *_PROXY_WRITER, ("DEFAULT", dhcp.DEFAULT_OPTS),
                   ("DEFAULT", [l3.HA_VRRP_ADVERT_INT])],
    "l3-agent": [
        *_COMMON, *_AGENT, *_PROXY_WRITER,
        ("DEFAULT", l3.DEFAULT_OPTS), ("DEFAULT", [proxy.metadata_port]),
    ],
    "l2-agent": [*_COMMON, *_AGENT, *_PROXY_WRITER, *l2.REGISTRATIONS],
    "ns-metadata-proxy": [
        *_COMMON, *_PROXY_WRITER,
        ("DEFAULT", [proxy.metadata_port]), ("DEFAULT", proxy.NS_PROXY_OPTS),
    ],
}


def _union() -> list[Registration]:
    seen: set[tuple[str, int]] = set()
    out: list[Registration] = []
    for regs in _BY_SERVICE.values():
        for section, opts in regs:
            fresh = [o for o in opts if (section, id(o)) not in seen]
            seen.update((section, id(o)) for o in fresh)
            if fresh:
                out.append((section, fresh))
    return out


_BY_SERVICE["all-in-one"] = _union()

SERVICES: tuple[str, ...] = tuple(_BY_SERVICE)


def registrations(service: str) -> list[Registration]:
    """The (section, options) pairs of `service`; ValueError names the known services."""
    try:
        return _BY_SERVICE[service]
    except KeyError:
        raise ValueError(
            f"unknown service {service!r}; known: {', '.join(SERVICES)}"
        ) from None
