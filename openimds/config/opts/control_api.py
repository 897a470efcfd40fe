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
    "api_workers", min=0, help="Worker processes of the control-plane API; unset = CPU count."
)

region_name = cfg.StrOpt(
    "region_name", default="RegionOne",
    help="Region of every endpoint in the token's service catalog.")

DEFAULT_OPTS: list[cfg.Opt] = [bind_host, bind_port, token_expiration, api_workers,
                               region_name]
