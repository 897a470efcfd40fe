"""`openimds config check`: show what the services would read, and what is wrong with it.

Exit codes: 0 = loads (warnings may be printed), 1 = loads but the metadata API's and the
agent's shared secrets differ (every request would fail 403), 2 = a file cannot be used
(unreadable, bad syntax, an invalid value): one line `error: <file>: [section] option: why`.
Effective options go to stdout; warnings and errors to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from openimds.cli.common import config_parent

EXIT_OK = 0
EXIT_SECRET_MISMATCH = 1
EXIT_INVALID = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from openimds.config import SERVICES

    config = subparsers.add_parser("config", help="configuration files")
    verbs = config.add_subparsers(dest="config_command", metavar="VERB")
    check = verbs.add_parser(
        "check",
        parents=[config_parent()],
        help="print the effective options per service and report problems",
        description="Load the files as the services would and print the effective options "
        "(secrets masked). Without --service the service is guessed from each file name "
        "(nova.conf, metadata_agent.ini, dhcp_agent.ini, l3_agent.ini); other files are "
        "read by every guessed service, or by all-in-one when none is recognised. Exit 0: "
        "fine; 1: the API's and agent's shared secrets differ; 2: invalid file or value.",
    )
    check.add_argument("--service", choices=SERVICES, default=None,
                       help="read every file as this service")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    return run_check(args.config_files, args.config_dirs, args.service, sys.stdout, sys.stderr)


def run_check(config_files: list[str], config_dirs: list[str], service: str | None,
              out: TextIO, err: TextIO) -> int:
    from openimds.config import ConfigError, inspect_config
    from openimds.config.check import effective_options, plan_checks, secret_mismatches

    loads = []
    for svc, files in plan_checks(config_files, service):
        try:
            loads.append(inspect_config(svc, files, config_dirs))
        except ConfigError as exc:
            print(f"error: {exc}", file=err)
            return EXIT_INVALID

    for loaded in loads:
        for finding in loaded.findings:
            print(f"warning: {finding}", file=err)

    for i, loaded in enumerate(loads):
        if i:
            print(file=out)
        shown_files = ", ".join(loaded.files) or "no files, defaults only"
        print(f"# {loaded.service} ({shown_files})", file=out)
        for section, options in effective_options(loaded):
            print(f"[{section}]", file=out)
            for opt in options:
                note = ""
                if opt.origin is not None:
                    note = f"  # {opt.origin.file}"
                    if opt.origin.deprecated:
                        note += f" as [{opt.origin.section}] {opt.origin.key}"
                print(f"{opt.name} = {opt.value}{note}".rstrip(), file=out)

    mismatches = secret_mismatches(loads)
    for mismatch in mismatches:
        print(f"warning: {mismatch.message()}", file=err)
    return EXIT_SECRET_MISMATCH if mismatches else EXIT_OK
