"""The `openimds` command: one argparse tree assembled from per-part command modules.

Each module named in COMMAND_MODULES exposes ``register(subparsers) -> None``; every leaf
command sets ``func=<callable(args) -> int>`` with ``set_defaults``. Adding a command is one
line here plus its own module, so parts never edit each other's files.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "openimds.cli.db",
    "openimds.cli.control_cmd",
    "openimds.cli.client_cmd",
    "openimds.cli.proxy_cmd",
    "openimds.cli.allinone",
    "openimds.cli.config_cmd",
    "openimds.cli.metadata_cmd",
    "openimds.cli.agent_cmd",
    "openimds.cli.network_agents_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openimds",
        description="openimds: instance metadata service for multi-tenant clouds",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
