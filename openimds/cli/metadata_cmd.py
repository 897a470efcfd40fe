"""`openimds metadata-api`: the metadata API service (nova-api-metadata's options).

Flat wiring: config → MetadataSettings (plain values, validated here) → serve().
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from openimds.cli.common import config_parent, setup_logging

LOG = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "metadata-api",
        parents=[config_parent()],
        help="serve the EC2 and OpenStack metadata trees (nova's metadata API)",
    )
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not bring the inventory schema up to date before serving",
    )
    parser.set_defaults(func=_run)


def settings_from_conf(conf: Any) -> Any:
    """MetadataSettings from a loaded `metadata-api` ConfigOpts; raises ValueError on bad values."""
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
        load_static_vendordata(api.vendordata_jsonfile_path) if "StaticJSON" in providers else {}
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
    )


def _run(args: argparse.Namespace) -> int:
    from openimds.config import load_config
    from openimds.inventory.migrate import UpgradeFailed, upgrade_in_child
    from openimds.metadata.service import serve

    conf = load_config("metadata-api", args.config_files, args.config_dirs)
    debug = bool(args.debug or conf.debug)
    setup_logging(debug, conf.log_file)
    try:
        settings = settings_from_conf(conf)
    except (ValueError, OSError) as exc:
        LOG.error("metadata-api: invalid configuration: %s", exc)
        return 2
    if not args.no_migrate and settings.database_url:
        # Once, here, before the workers start: they must not race each other to migrate.
        # A database that is not up yet is waited for (one WARNING), not a traceback and exit.
        # In a child, so Alembic never sits in the heap the workers are forked from.
        try:
            upgrade_in_child(settings.database_url)
        except UpgradeFailed as exc:
            LOG.error("metadata-api: %s", exc)
            return 1
    return serve(settings, debug=debug)
