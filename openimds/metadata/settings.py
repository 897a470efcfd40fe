"""The metadata API's settings, built once from a loaded `metadata-api` ConfigOpts.

`settings_from_conf` is the one place that reads the API's options (nova-api-metadata's,
plus openimds's `[metadata]` group); it loads the files they name (static vendordata, the
identity key and certificate) and resolves the token key, so a bad value stops the service at
start. The frozen value it returns (`MetadataSettings`, declared beside `serve`) is all the
workers run on.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from openimds.config import database_url
from openimds.metadata.aws import AwsProfile
from openimds.metadata.identify import IdentifySettings, parse_trusted_proxies
from openimds.metadata.identity import IdentitySigner
from openimds.metadata.options import defaults_from_conf
from openimds.metadata.respond import RespondSettings
from openimds.metadata.service import MetadataSettings
from openimds.metadata.tokens import TokenKeys
from openimds.metadata.tree import VendordataOptions
from openimds.metadata.vendordata import (
    DynamicVendordataOptions,
    load_static_vendordata,
    parse_targets,
)
from openimds.wire import STATIC_JSON

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["TREE_CACHE_BESIDE_ANSWERS", "MetadataSettings", "settings_from_conf"]

# Rendered trees kept per process when the fast layer keeps answers as bytes: a tree (~23 KB,
# ~270 objects the collector tracks) serves an instance's first request for each path, which
# a boot makes within seconds, and every later request is answered from bytes. 20,000 trees
# (the Responder's own default, for the aiohttp layer) held ~460 MB at 100k instances and
# made each full collection walk ~5M objects.
TREE_CACHE_BESIDE_ANSWERS = 4096

# The operator reads these warnings as the metadata API's (the name it logged them under).
LOG = logging.getLogger("openimds.cli.metadata_cmd")


def settings_from_conf(conf: ConfigOpts) -> MetadataSettings:
    """MetadataSettings from a loaded `metadata-api` ConfigOpts; raises ValueError on bad values."""
    api = conf.api
    providers = tuple(api.vendordata_providers or ())
    identify = IdentifySettings(
        service_metadata_proxy=bool(conf.neutron.service_metadata_proxy),
        shared_secret=str(conf.neutron.metadata_proxy_shared_secret or ""),
        trusted_proxies=parse_trusted_proxies(str(a) for a in (api.trusted_proxies or ())),
    )
    if identify.service_metadata_proxy and not identify.shared_secret:
        LOG.warning(
            "[neutron] metadata_proxy_shared_secret is empty: signatures are checked with an "
            "empty key, which anybody can compute"
        )
    static = (
        load_static_vendordata(api.vendordata_jsonfile_path) if STATIC_JSON in providers else {}
    )
    guest = conf.metadata
    token_secret = str(guest.token_secret or "") or identify.shared_secret
    if token_secret:
        tokens = TokenKeys.from_secrets(token_secret, [str(p) for p in guest.token_previous_secrets])
    else:
        LOG.warning(
            "[metadata] token_secret and [neutron] metadata_proxy_shared_secret are empty: "
            "session tokens use a random key of this process (not valid on other replicas or "
            "after a restart)"
        )
        tokens = TokenKeys(os.urandom(32))
    defaults = defaults_from_conf(conf)
    signer = None
    if guest.identity_key_file or guest.identity_cert_file:
        if not (guest.identity_key_file and guest.identity_cert_file):
            raise ValueError("[metadata] identity_key_file and identity_cert_file go together")
        signer = IdentitySigner.from_files(guest.identity_key_file, guest.identity_cert_file)
    aws = AwsProfile(region=str(conf.region_name), domain=api.dhcp_domain or None,
                     signer=signer)
    workers = conf.metadata_workers
    if workers is None:
        workers = os.cpu_count() or 1
    return MetadataSettings(
        listen=str(conf.metadata_listen),
        port=int(conf.metadata_listen_port),
        workers=max(1, int(workers)),
        metrics_listen=str(conf.metrics_listen),
        metrics_port=int(conf.metrics_listen_port),
        respond=RespondSettings(
            identify=identify,
            dhcp_domain=api.dhcp_domain or None,
            vendordata=VendordataOptions(providers=providers, static=static),
            tokens=tokens,
            metadata_defaults=defaults,
            ec2_profile=str(guest.ec2_profile),
            aws=aws,
            **({"tree_cache_size": TREE_CACHE_BESIDE_ANSWERS}
               if str(conf.metadata_http_server) == "fast" and conf.metadata_answer_cache_size
               else {}),
        ),
        dynamic_vendordata=DynamicVendordataOptions(
            targets=parse_targets(api.vendordata_dynamic_targets or ()),
            connect_timeout=float(api.vendordata_dynamic_connect_timeout),
            read_timeout=float(api.vendordata_dynamic_read_timeout),
            ssl_certfile=api.vendordata_dynamic_ssl_certfile or None,
            failure_fatal=bool(api.vendordata_dynamic_failure_fatal),
        ),
        database_url=database_url(conf),
        log_file=str(conf.log_file) if conf.log_file else None,
        http_server=str(conf.metadata_http_server),
        answer_cache_size=int(conf.metadata_answer_cache_size),
        token_usage_interval=float(conf.metadata_token_usage_interval),
        token_usage_max_interval=float(conf.metadata_token_usage_max_interval),
    )
