"""Small shared wiring: from config files to the objects commands need."""

from __future__ import annotations

from collections.abc import Sequence

from openimds.inventory.store import sqlite_url_for_state_dir


def database_url_from_conf(conf: object) -> str:
    """`[database] connection`, or the SQLite file under `state_path` when empty."""
    url = getattr(getattr(conf, "database"), "connection", None)  # noqa: B009
    return url or sqlite_url_for_state_dir(getattr(conf, "state_path"))  # noqa: B009


def database_url(config_files: Sequence[str], config_dirs: Sequence[str]) -> str:
    from openimds.config import load_config

    return database_url_from_conf(load_config("control-api", config_files, config_dirs))
