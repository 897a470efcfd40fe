"""`openimds db upgrade|revision`: create or migrate the inventory schema."""

from __future__ import annotations

import argparse

from openimds.cli.common import config_parent


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="inventory database schema")
    verbs = db.add_subparsers(dest="db_command", metavar="VERB")
    up = verbs.add_parser(
        "upgrade", parents=[config_parent()], help="migrate the schema to the newest revision"
    )
    up.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from openimds.config import database_url, load_config
    from openimds.inventory.migrate import upgrade

    url = database_url(load_config("control-api", args.config_files, args.config_dirs))
    upgrade(url)
    print(f"database schema is current: {url}")
    return 0
