"""Server-side control-plane commands: `openimds control-api` (the REST API server) and the
identity administration that writes the database directly: `bootstrap`, `project create`,
`user create` (they read `[database] connection` like the server does)."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import TYPE_CHECKING

from openimds import runtime
from openimds.cli.common import config_parent, setup_logging

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

    from openimds.inventory.store import Store

LOG = logging.getLogger("openimds.control-api")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = subparsers.add_parser("control-api", parents=[config_parent()],
                                help="run the control-plane REST API (Neutron/Nova shapes)")
    api.set_defaults(func=_serve)

    boot = subparsers.add_parser(
        "bootstrap", parents=[config_parent()],
        help="create project 'admin' and user 'admin' (role admin); safe to run again")
    boot.add_argument("--admin-password", required=True, help="password of the admin user")
    boot.set_defaults(func=_bootstrap)

    project = subparsers.add_parser("project", help="projects (writes the database directly)")
    pverbs = project.add_subparsers(dest="project_command", metavar="VERB")
    pcreate = pverbs.add_parser("create", parents=[config_parent()], help="create a project")
    pcreate.add_argument("name")
    pcreate.add_argument("--description", default="")
    pcreate.add_argument("--or-show", action="store_true",
                         help="succeed if the project already exists")
    pcreate.set_defaults(func=_project_create)

    user = subparsers.add_parser("user", help="users (writes the database directly)")
    uverbs = user.add_subparsers(dest="user_command", metavar="VERB")
    ucreate = uverbs.add_parser("create", parents=[config_parent()], help="create a user")
    ucreate.add_argument("name")
    ucreate.add_argument("--project", required=True, help="project name or id")
    ucreate.add_argument("--password", required=True)
    ucreate.add_argument("--role", choices=("member", "admin", "service", "reader"),
                         default="member",
                         help="member: own project; admin: all projects; service: read all "
                              "projects and the change feed (agents); reader: read own "
                              "project only")
    ucreate.add_argument("--or-show", action="store_true",
                         help="update the user if it already exists")
    ucreate.set_defaults(func=_user_create)


def _conf(args: argparse.Namespace) -> ConfigOpts:
    from openimds.config import load_config

    return load_config("control-api", args.config_files, args.config_dirs)


def _store(args: argparse.Namespace) -> Store:
    from openimds.config import database_url
    from openimds.inventory.migrate import open_store

    return open_store(database_url(_conf(args)))


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from openimds.config import ConfigError, database_url
    from openimds.control.app import build_app
    from openimds.control.settings import settings_from_conf
    from openimds.inventory.migrate import UpgradeFailed, upgrade_in_child
    from openimds.inventory.store import Store
    from openimds.linux.malloc import bound_heap_retention

    setup_logging(args.debug)
    try:
        conf = _conf(args)
        settings = settings_from_conf(conf)
    except ConfigError as exc:
        print(f"openimds control-api: {exc}", file=sys.stderr)
        return 2
    # A database that is not up yet is waited for (one WARNING), not a traceback and exit;
    # once serving, an outage is a 503 per request (docs/control-plane.md).
    # In a child process: the migration tooling then never occupies the server's memory.
    try:
        upgrade_in_child(database_url(conf))
    except UpgradeFailed as exc:
        print(f"openimds control-api: {exc}", file=sys.stderr)
        return 1
    # Password checks (scrypt, 16 MiB each) and list pages run on worker threads: without
    # this each thread's arena keeps its largest buffers resident (openimds/linux/malloc.py).
    bound_heap_retention()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional accelerator
        pass
    workers = conf.api_workers or 1

    def run(sock: socket.socket) -> None:
        # Each process its own Store: database connections are never shared across a fork.
        store = Store(database_url(conf))
        try:
            web.run_app(build_app(store, settings), print=None, access_log=LOG,
                        shutdown_timeout=5.0, sock=sock)
        finally:
            store.dispose()

    # Bound here, before anything is served: an address another process holds is one line
    # and exit 1 (not a traceback), and "listening" is said only once it is true. With
    # several workers, they all accept on this one socket; each runs the whole API (a
    # process per core for the CPU-bound parts: JSON, password checks). They share nothing
    # but the database, as replicas on several hosts do (docs/ha.md).
    try:
        sock = listen_socket(settings.bind_host, settings.bind_port)
    except OSError as exc:
        print(f"openimds control-api: cannot listen on {settings.bind_host}:"
              f"{settings.bind_port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    LOG.info("control-plane API listening on %s:%s", settings.bind_host, settings.bind_port)
    try:
        if workers <= 1:
            run(sock)
            return 0
        return runtime.supervise_workers(workers, lambda _slot: run(sock),
                                         name="control-plane API")
    finally:
        sock.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket on host:port (OSError when it cannot be had)."""
    if host == "" and socket.has_dualstack_ipv6():
        # "" is every address, IPv4 and IPv6 alike (as the event loop's own bind has it).
        return socket.create_server(("", port), family=socket.AF_INET6, backlog=1024,
                                    dualstack_ipv6=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def _fail(message: str) -> int:
    print(f"openimds: {message}", file=sys.stderr)
    return 1


def _bootstrap(args: argparse.Namespace) -> int:
    from openimds.control.auth import bootstrap
    from openimds.control.errors import ApiError

    store = _store(args)
    try:
        project_id, user_id = bootstrap(store, args.admin_password)
    except ApiError as exc:
        return _fail(exc.message)
    finally:
        store.dispose()
    print(f"admin user {user_id} in project admin ({project_id}) is ready")
    return 0


def _project_create(args: argparse.Namespace) -> int:
    from openimds.control.auth import create_project
    from openimds.control.errors import ApiError

    store = _store(args)
    try:
        pid = create_project(store, args.name, args.description, exist_ok=args.or_show)
    except ApiError as exc:
        return _fail(exc.message)
    finally:
        store.dispose()
    print(pid)
    return 0


def _user_create(args: argparse.Namespace) -> int:
    from openimds.control.auth import create_user
    from openimds.control.errors import ApiError

    store = _store(args)
    try:
        uid = create_user(store, args.name, args.password, args.project, args.role,
                          exist_ok=args.or_show)
    except ApiError as exc:
        return _fail(exc.message)
    finally:
        store.dispose()
    print(uid)
    return 0
