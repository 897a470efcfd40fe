"""Pieces every `openimds` sub-command shares: the config-file flags, and the logging setup
(`openimds.runtime.setup_logging`, which the services' workers also use)."""

from __future__ import annotations

import argparse

from openimds.runtime import setup_logging

__all__ = ["config_parent", "setup_logging"]


def config_parent() -> argparse.ArgumentParser:
    """A parent parser giving a command `--config-file` (repeatable), `--config-dir` and `--debug`.

    Add it with ``parents=[config_parent()]`` on every leaf sub-command so the flags are accepted
    after the command name, as operators type them (`openimds metadata-api --config-file nova.conf`).
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config-file",
        dest="config_files",
        action="append",
        default=[],
        metavar="PATH",
        help="ini file to read (repeatable; later files override earlier ones)",
    )
    parent.add_argument(
        "--config-dir",
        dest="config_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="directory whose *.conf files are read after the --config-file files",
    )
    parent.add_argument("--debug", action="store_true", default=False, help="log at DEBUG level")
    return parent
