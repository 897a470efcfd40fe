"""The control-plane REST API listener (Neutron's `[DEFAULT] bind_host/bind_port`)."""

from __future__ import annotations

from oslo_config import cfg

bind_host = cfg.HostAddressOpt(
    "bind_host", default="127.0.0.1", help="Address the control-plane API listens on."
)
bind_port = cfg.PortOpt("bind_port", default=9696, help="Port of the control-plane API.")
token_expiration = cfg.IntOpt(
    "token_expiration", default=3600, min=1, help="Lifetime of issued API tokens, in seconds."
)
api_workers = cfg.IntOpt(
    "api_workers", min=0,
    help="Processes of the control-plane API, accepting on one socket (a supervisor restarts "
         "one that dies); unset, 0 or 1 = one process.",
)

change_retention_seconds = cfg.IntOpt(
    "change_retention_seconds", default=86400, min=0,
    help="Keep change-feed records at most this many seconds (0 = no age bound). A consumer "
         "that falls further behind gets 410 ChangesPruned and resynchronises from a listing.",
)
change_retention_count = cfg.IntOpt(
    "change_retention_count", default=100000, min=0,
    help="Keep at most this many newest change-feed records (0 = no count bound).",
)
change_prune_interval = cfg.IntOpt(
    "change_prune_interval", default=300, min=0,
    help="Seconds between prunes of the change feed by the control-plane API (0 = never).",
)

DEFAULT_OPTS: list[cfg.Opt] = [bind_host, bind_port, token_expiration, api_workers,
                               change_retention_seconds, change_retention_count,
                               change_prune_interval]
