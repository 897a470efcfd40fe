"""`openimds ns-metadata-proxy`: run the metadata haproxy for one router or network, here.

Accepts the seed's `neutron-ns-metadata-proxy` command line unchanged (underscore spellings,
dashed ones too) and runs the proxy in the *current* namespace, so it is started the way the
seed starts it: `ip netns exec qrouter-<id> openimds ns-metadata-proxy --router_id=<id> ...`.

By default haproxy is daemonised and tracked by `--pid_file` (haproxy's own pid file): running
the command again adopts a healthy proxy, reloads it if the rendered config changed, or
restarts it if it died. `--foreground` execs haproxy in the foreground instead, for a service
manager that supervises it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from openimds.cli.common import config_parent, setup_logging
from openimds.proxy.haproxy import (
    ProxyDefaults,
    ProxySpec,
    network_binds,
    proxy_spec,
    router_binds,
)
from openimds.proxy.options import (
    connections_from_conf,
    default_proxy_user,
    rate_limit_from_conf,
    timeouts_from_conf,
)

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "ns-metadata-proxy",
        parents=[config_parent()],
        help="run the metadata proxy (haproxy) for one router or network namespace",
        description="Render the haproxy config for one router (0.0.0.0:metadata_port) or "
        "network (169.254.169.254:metadata_port, 80 by default) and run haproxy in the "
        "current network namespace, forwarding to the metadata agent's unix socket.",
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument("--network_id", "--network-id", dest="network_id", metavar="ID",
                     help="serve this network (DHCP namespace)")  # fmt: skip
    who.add_argument("--router_id", "--router-id", dest="router_id", metavar="ID",
                     help="serve this router (router namespace)")  # fmt: skip
    p.add_argument("--metadata_port", "--metadata-port", dest="metadata_port", type=int,
                   metavar="PORT", help="listen port (router: [DEFAULT] metadata_port, "
                   "9697; network: 80)")  # fmt: skip
    p.add_argument("--metadata_proxy_socket", "--metadata-proxy-socket",
                   dest="metadata_proxy_socket", metavar="PATH",
                   help="the metadata agent's unix socket")  # fmt: skip
    p.add_argument("--pid_file", "--pid-file", dest="pid_file", metavar="PATH",
                   help="haproxy's pid file")  # fmt: skip
    p.add_argument("--state_path", "--state-path", dest="state_path", metavar="DIR",
                   help="state directory (config under <state_path>/ns-metadata-proxy/)")  # fmt: skip
    p.add_argument("--metadata_proxy_user", "--metadata-proxy-user", dest="metadata_proxy_user",
                   metavar="USER", help="user (name or uid) haproxy runs as")  # fmt: skip
    p.add_argument("--metadata_proxy_group", "--metadata-proxy-group",
                   dest="metadata_proxy_group", metavar="GROUP",
                   help="group (name or gid) haproxy runs as")  # fmt: skip
    p.add_argument("--log-file", "--log_file", dest="log_file", metavar="PATH",
                   help="log file of this command (haproxy itself logs to syslog)")  # fmt: skip
    p.add_argument("--log-dir", "--log_dir", dest="log_dir", metavar="DIR",
                   help="directory for a relative --log-file")  # fmt: skip
    p.add_argument("--foreground", action="store_true",
                   help="exec haproxy in the foreground instead of daemonising it")  # fmt: skip
    p.add_argument("--haproxy", default="haproxy", metavar="PATH", help="haproxy binary")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from openimds.config import ConfigError, load_config

    try:
        conf = load_config("ns-metadata-proxy", args.config_files, args.config_dirs)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log_file = args.log_file or conf.log_file
    log_dir = args.log_dir or conf.log_dir
    if log_file and log_dir and not os.path.isabs(log_file):
        log_file = os.path.join(log_dir, log_file)
    debug = bool(args.debug or conf.debug)
    setup_logging(debug, log_file)

    try:
        spec = spec_from_args(args, conf, debug=debug)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _start(spec, conf_state_path(args, conf), args.haproxy, args.foreground)


def conf_state_path(args: argparse.Namespace, conf: ConfigOpts) -> str:
    return str(args.state_path or conf.state_path)


def spec_from_args(args: argparse.Namespace, conf: ConfigOpts, *, debug: bool = False) -> ProxySpec:
    """The ProxySpec the flags (over the config files) describe; ValueError says what is wrong."""
    c = conf
    network_id = args.network_id or c.network_id
    router_id = args.router_id or c.router_id
    if bool(network_id) == bool(router_id):
        raise ValueError("give exactly one of --network_id or --router_id")
    state_path = conf_state_path(args, conf)
    socket_path = args.metadata_proxy_socket or c.metadata_proxy_socket
    # Neutron's default: the proxy runs as the effective user/group of whoever starts it;
    # started by root, it drops to a dedicated user instead (default_proxy_user).
    user = (args.metadata_proxy_user or c.metadata_proxy_user or default_proxy_user("")
            or str(os.geteuid()))
    group = args.metadata_proxy_group or c.metadata_proxy_group or str(os.getegid())
    defaults = ProxyDefaults(
        state_path=state_path,
        socket_path=socket_path,
        user=user,
        group=group,
        timeouts=timeouts_from_conf(conf),
        connections=connections_from_conf(conf),
        rate_limit=rate_limit_from_conf(conf),
        # No syslog socket (containers, CI): run without logging rather than fail to log.
        log_target="/dev/log" if os.path.exists("/dev/log") else None,
        debug=debug,
    )
    pidfile = os.path.abspath(args.pid_file) if args.pid_file else None
    if network_id:
        return proxy_spec(defaults, "network", network_id,
                          network_binds(args.metadata_port or 80), pidfile=pidfile)
    port = args.metadata_port or int(c.metadata_port)
    return proxy_spec(defaults, "router", router_id, router_binds(port), pidfile=pidfile)


def _start(spec: ProxySpec, state_path: str, haproxy: str, foreground: bool) -> int:
    from openimds.proxy.supervisor import HaproxySupervisor, ProxyStartFailed

    sup = HaproxySupervisor(state_path, haproxy=haproxy)
    if foreground:
        # Write (validated) config, then become haproxy: `-db` overrides the config's `daemon`.
        try:
            conf = sup.write_config(spec)
        except ProxyStartFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        os.makedirs(os.path.dirname(spec.pidfile), exist_ok=True)
        os.execvp(haproxy, [haproxy, "-f", conf, "-db"])
    try:
        outcome = sup.ensure(spec, None)
    except ProxyStartFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{spec.kind} {spec.resource_id}: {outcome.value} (pid {sup.pid(spec.resource_id)})")
    return EXIT_OK
