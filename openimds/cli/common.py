"""Pieces every `openimds` sub-command shares: the config-file flags and logging setup."""

from __future__ import annotations

import argparse
import logging
import sys


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


def setup_logging(debug: bool = False, log_file: str | None = None) -> None:
    """Configure the root logger once for a command; services log one line per event."""
    handler: logging.Handler = (
        # Log lines may quote what a client sent, undecodable bytes included: escape them
        # (as stderr does) rather than fail the record.
        logging.FileHandler(log_file, errors="backslashreplace")
        if log_file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
