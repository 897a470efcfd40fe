"""The metadata API (nova.conf): listener, identification mode, caching, vendor data.

Upstream names and groups are kept. Old `[DEFAULT]` spellings that nova once accepted stay
accepted as deprecated aliases, because operators bring nova.conf files written for them
(the seed's nova.conf uses `service_neutron_metadata_proxy` and
`neutron_metadata_proxy_shared_secret`).
"""

from __future__ import annotations

from oslo_config import cfg, types

from openimds.wire import STATIC_JSON, VENDORDATA_PROVIDERS

enabled_apis = cfg.ListOpt(
    "enabled_apis",
    item_type=types.String(choices=["osapi_compute", "metadata"]),
    default=["osapi_compute", "metadata"],
    help="API servers a nova.conf-driven process runs: osapi_compute = the compute part of "
    "the control-plane API, metadata = the metadata API.",
)
metadata_listen = cfg.HostAddressOpt(
    "metadata_listen", default="0.0.0.0", help="Address the metadata API listens on."
)
metadata_listen_port = cfg.PortOpt(
    "metadata_listen_port", default=8775, help="Port of the metadata API."
)
# One option for both the API and the agent (same name, same section in an all-in-one
# file); each service picks its own default when unset, as nova and neutron do.
metadata_workers = cfg.IntOpt(
    "metadata_workers",
    min=0,
    help="Workers of the metadata API / metadata agent; unset = the CPU count for the API, "
    "half of it for the agent.",
)
metrics_listen = cfg.HostAddressOpt(
    "metrics_listen", default="127.0.0.1", help="Address of the Prometheus /metrics listener."
)
metrics_listen_port = cfg.PortOpt(
    "metrics_listen_port", default=9779, help="Port of the Prometheus /metrics listener."
)

metadata_http_server = cfg.StrOpt(
    "metadata_http_server",
    default="fast",
    choices=[
        ("fast", "a uvloop protocol around the httptools (llhttp) parser, writing each answer "
         "as one buffer"),
        ("aiohttp", "aiohttp's low-level server (the round-1 layer)"),
    ],
    help="openimds: the HTTP layer of the metadata API. Both serve the same answers (the "
    "same responder decides them).",
)

metadata_answer_cache_size = cfg.IntOpt(
    "metadata_answer_cache_size",
    default=131072,
    min=0,
    help="openimds: answers the `fast` HTTP layer keeps as complete response bytes, per "
    "worker (each about 0.5 KB beside the document it shares with the rendered tree), to "
    "answer the same signed GET or HEAD again without the responder; every change the "
    "change feed applies to an instance drops its answers. 0 keeps none.",
)

metadata_token_usage_interval = cfg.FloatOpt(
    "metadata_token_usage_interval",
    default=1.0,
    min=0.1,
    help="openimds: seconds between two writes of the per-instance session-token usage "
    "(tokenless and invalid-token requests, shown by `server show` and `server metadata "
    "token-usage`) to the inventory, while writing is cheap.",
)

metadata_token_usage_max_interval = cfg.FloatOpt(
    "metadata_token_usage_max_interval",
    default=60.0,
    min=0.1,
    help="openimds: the longest wait between two writes of the session-token usage. When many "
    "instances make tokenless requests (a write costs ~10 us of CPU per instance), the wait "
    "stretches from metadata_token_usage_interval until writing takes at most 2% of a core, "
    "up to this; counts are kept in memory meanwhile (and written at shutdown), so the usage "
    "shown is at most this many seconds old.",
)

DEFAULT_OPTS: list[cfg.Opt] = [
    enabled_apis, metadata_listen, metadata_listen_port, metadata_workers,
    metrics_listen, metrics_listen_port, metadata_http_server, metadata_answer_cache_size,
    metadata_token_usage_interval, metadata_token_usage_max_interval,
]

# openimds defaults to proxy mode (nova's default is false): the agent in front of the API
# is the normal deployment, and direct mode on a multi-tenant network would mis-identify
# callers whose addresses overlap.
service_metadata_proxy = cfg.BoolOpt(
    "service_metadata_proxy",
    default=True,
    deprecated_opts=[
        cfg.DeprecatedOpt("service_neutron_metadata_proxy", group="DEFAULT"),
        cfg.DeprecatedOpt("service_quantum_metadata_proxy", group="DEFAULT"),
    ],
    help="Trust signed X-Instance-ID headers from the metadata agent (proxy mode); false = "
    "identify the caller by its address (direct mode).",
)
metadata_proxy_shared_secret_api = cfg.StrOpt(
    "metadata_proxy_shared_secret",
    default="",
    secret=True,
    deprecated_opts=[
        cfg.DeprecatedOpt("neutron_metadata_proxy_shared_secret", group="DEFAULT"),
        cfg.DeprecatedOpt("quantum_metadata_proxy_shared_secret", group="DEFAULT"),
    ],
    help="HMAC key; must equal the metadata agent's metadata_proxy_shared_secret.",
)
NEUTRON_OPTS: list[cfg.Opt] = [service_metadata_proxy, metadata_proxy_shared_secret_api]

metadata_cache_expiration = cfg.IntOpt(
    "metadata_cache_expiration",
    default=15,
    min=0,
    deprecated_group="DEFAULT",
    help="Seconds a rendered document may be reused. openimds also drops it as soon as the "
    "change feed reports a change to the instance.",
)
dhcp_domain = cfg.StrOpt(
    "dhcp_domain", default="novalocal", help="Domain appended to hostnames in the metadata."
)
vendordata_providers = cfg.ListOpt(
    "vendordata_providers",
    item_type=types.String(choices=list(VENDORDATA_PROVIDERS)),
    default=[STATIC_JSON],
    deprecated_group="DEFAULT",
    help="Vendor data sources, in order.",
)
vendordata_jsonfile_path = cfg.StrOpt(
    "vendordata_jsonfile_path", deprecated_group="DEFAULT",
    help="JSON file served as StaticJSON vendor data; unset = {}.",
)
vendordata_dynamic_targets = cfg.ListOpt(
    "vendordata_dynamic_targets", default=[], deprecated_group="DEFAULT",
    help="DynamicJSON targets as name@url.",
)
vendordata_dynamic_connect_timeout = cfg.IntOpt(
    "vendordata_dynamic_connect_timeout", default=5, min=3, deprecated_group="DEFAULT",
    help="Connect timeout for DynamicJSON targets, in seconds.",
)
vendordata_dynamic_read_timeout = cfg.IntOpt(
    "vendordata_dynamic_read_timeout", default=5, min=0, deprecated_group="DEFAULT",
    help="Read timeout for DynamicJSON targets, in seconds.",
)
vendordata_dynamic_ssl_certfile = cfg.StrOpt(
    "vendordata_dynamic_ssl_certfile", default="", deprecated_group="DEFAULT",
    help="CA bundle for https DynamicJSON targets.",
)
vendordata_dynamic_failure_fatal = cfg.BoolOpt(
    "vendordata_dynamic_failure_fatal", default=False, deprecated_group="DEFAULT",
    help="A failing DynamicJSON target makes the request fail (500) instead of giving {}.",
)
trusted_proxies = cfg.ListOpt(
    "trusted_proxies",
    item_type=types.IPAddress(),
    default=[],
    help="openimds: addresses whose X-Forwarded-For is honoured in direct mode (replaces "
    "nova's removed use_forwarded_for, limited to known peers).",
)
API_OPTS: list[cfg.Opt] = [
    metadata_cache_expiration, dhcp_domain, vendordata_providers, vendordata_jsonfile_path,
    vendordata_dynamic_targets, vendordata_dynamic_connect_timeout,
    vendordata_dynamic_read_timeout, vendordata_dynamic_ssl_certfile,
    vendordata_dynamic_failure_fatal, trusted_proxies,
]
