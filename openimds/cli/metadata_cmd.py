"""`openimds metadata-api`: the metadata API service (nova-api-metadata's options).

Flat wiring: config → MetadataSettings (plain values, validated by
`metadata.settings.settings_from_conf`) → serve().
"""

from __future__ import annotations

import argparse
import logging

from openimds.cli.common import config_parent, setup_logging

LOG = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _run(args: argparse.Namespace) -> int:
    from openimds.config import load_config
    from openimds.inventory.migrate import UpgradeFailed, upgrade_in_child
    from openimds.metadata.service import serve
    from openimds.metadata.settings import settings_from_conf

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
