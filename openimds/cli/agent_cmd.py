"""`openimds metadata-agent`: the metadata agent on the unix socket (metadata_agent.ini).

Exit codes: 0 = stopped by SIGTERM/SIGINT; 2 = unusable configuration (one line on stderr:
`error: <why>`), or the socket cannot be created (in use by a live agent, not a socket, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from openimds.cli.common import config_parent, setup_logging

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

    from openimds.agent.settings import AgentSettings
    from openimds.control.report import ReportThread

EXIT_INVALID = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = subparsers.add_parser(
        "metadata-agent",
        parents=[config_parent()],
        help="run the metadata agent (unix socket -> signed requests to the metadata API)",
        description="Serve the namespace proxies on metadata_proxy_socket: map (address, "
        "network|router) to an instance through a port index fed by the control-plane "
        "change feed, sign the instance id and forward to the metadata API. Reads "
        "metadata_agent.ini (seed spellings accepted).",
    )
    agent.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from openimds.agent.control_feed import ControlFeed, MissingCredentials
    from openimds.agent.server import serve
    from openimds.agent.settings import settings_from_conf
    from openimds.config import ConfigError, load_config

    try:
        conf = load_config("metadata-agent", args.config_files, args.config_dirs)
        log_file = conf.log_file
        if log_file and conf.log_dir and not os.path.isabs(log_file):
            log_file = os.path.join(conf.log_dir, log_file)
        setup_logging(args.debug or conf.debug, log_file)
        settings = settings_from_conf(conf)
        ControlFeed.check_settings(settings)
    except (ConfigError, MissingCredentials, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    reporter = _reporter(conf, settings)
    try:
        return serve(settings, ControlFeed.from_settings)
    except (RuntimeError, OSError) as exc:
        logging.getLogger("openimds.agent").error("cannot serve on %s: %s",
                                                  settings.socket_path, exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        reporter.stop()


def _reporter(conf: ConfigOpts, settings: AgentSettings) -> ReportThread:
    """The registry heartbeat on its own thread: the serving loop lives in (possibly forked)
    workers, and one report per process is what the registry wants."""
    from openimds.agent.control_feed import ControlFeed
    from openimds.control.report import AgentReport, ReportThread
    from openimds.control.scheduling import METADATA_AGENT

    report = AgentReport(METADATA_AGENT, conf.host, lambda: {
        "metadata_proxy_socket": settings.socket_path,
        "nova_metadata_host": conf.nova_metadata_host,
        "nova_metadata_port": conf.nova_metadata_port,
        "log_agent_heartbeats": bool(conf.AGENT.log_agent_heartbeats)})
    thread = ReportThread(lambda: ControlFeed.from_settings(settings).client, report,
                          float(conf.AGENT.report_interval),
                          log_heartbeats=bool(conf.AGENT.log_agent_heartbeats))
    thread.start()
    return thread
