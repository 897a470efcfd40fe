"""Options every service reads: paths, logging, the inventory database."""

from __future__ import annotations

from oslo_config import cfg

STATE_PATH_DEFAULT = "/var/lib/openimds"

state_path = cfg.StrOpt(
    "state_path",
    default=STATE_PATH_DEFAULT,
    help="Top-level directory for openimds state (sockets, dnsmasq files, the SQLite file).",
)
debug = cfg.BoolOpt("debug", short="d", default=False, help="Log at DEBUG level.")
# Named with dashes like oslo.log so `--log-file` works as in the seed's proxy command line;
# in ini files the key is the dest (`log_file`), as operators already write it.
log_file = cfg.StrOpt(
    "log-file",
    deprecated_name="logfile",
    help="Log to this file (relative paths are taken under log_dir).",
)
log_dir = cfg.StrOpt("log-dir", deprecated_name="logdir", help="Directory for log_file.")
fabric_namespace = cfg.StrOpt(
    "fabric_namespace",
    default="",
    help="Network namespace holding openimds' own fabric links; empty means the namespace "
    "the process runs in.",
)
dhcp_lease_duration = cfg.IntOpt(
    "dhcp_lease_duration",
    default=86400,
    min=-1,
    help="DHCP lease time in seconds (-1 = infinite); route changes reach guests on renewal.",
)

DEFAULT_OPTS: list[cfg.Opt] = [state_path, debug, log_file, log_dir, fabric_namespace,
                               dhcp_lease_duration]

# The URL carries a password, hence secret.
connection = cfg.StrOpt(
    "connection",
    default="",
    secret=True,
    help="SQLAlchemy URL of the inventory; empty means SQLite at $state_path/openimds.sqlite.",
)
DATABASE_OPTS: list[cfg.Opt] = [connection]
