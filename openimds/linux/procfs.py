"""What /proc says about a pid: is it alive, what is its argv, which network namespace is it in,
and what does it listen on. Shared by the dnsmasq and haproxy supervisors, which must prove a
pid is *their* daemon before adopting or signalling it (a recycled pid is never trusted).

Pure parsers (text in, values out; table-tested on captured /proc text):

    parse_cmdline(raw) -> argv           parse_stat_state(text) -> "S" | "Z" | ... | None
    parse_pid(text) -> int | None        live_argv_of(cmdline, stat) -> argv | None
    parse_proc_net_tcp(text, ipv6=) -> {(address, port), ...} in LISTEN

Reads (thin; a vanished process reads as None / False, never an exception):

    live_argv(pid)          argv of a running process (None when gone, a zombie or argv-less)
    read_pid_file(path)     the first pid in a pid file
    all_pids()              every numeric entry of /proc
    netns_id(pid), named_netns_id(name), pid_in_netns(pid, netns)
    listening_sockets(pid)  TCP listeners of the pid's network namespace

`daemon_env()` is the environment those daemons are started with.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

from openimds.linux.files import read_text

__all__ = [
    "all_pids",
    "daemon_env",
    "live_argv",
    "live_argv_of",
    "named_netns_id",
    "netns_id",
    "parse_cmdline",
    "parse_pid",
    "parse_proc_net_tcp",
    "parse_stat_state",
    "pid_in_netns",
    "listening_sockets",
    "read_pid_file",
]

# /proc/<pid>/stat states of a process that is no longer running (zombie, dead).
_GONE_STATES = frozenset({"Z", "X"})
_TCP_LISTEN = "0A"

# -- pure parsers ------------------------------------------------------------------------


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """argv from /proc/<pid>/cmdline: NUL-terminated arguments (an empty argument stays)."""
    if not raw:
        return ()
    parts = raw.split(b"\0")
    if parts[-1] == b"":
        parts.pop()  # the terminator of the last argument
    return tuple(p.decode(errors="replace") for p in parts)


def parse_stat_state(text: str) -> str | None:
    """The state letter of /proc/<pid>/stat, or None if the text is not a stat line. The state
    follows the parenthesised comm, which may itself contain spaces and parentheses."""
    fields = text.rpartition(")")[2].split()
    return fields[0] if fields else None


def live_argv_of(cmdline: bytes, stat: str) -> tuple[str, ...] | None:
    """argv of a running process from its cmdline and stat texts; None for a zombie, a dead
    process, an unreadable stat or an empty argv (kernel threads)."""
    state = parse_stat_state(stat)
    argv = parse_cmdline(cmdline)
    if state is None or state in _GONE_STATES or not argv:
        return None
    return argv


def parse_pid(text: str) -> int | None:
    """The pid a pid file names: its first word when that is a number."""
    words = text.split()
    return int(words[0]) if words and words[0].isdigit() else None


def parse_proc_net_tcp(text: str, *, ipv6: bool) -> set[tuple[str, int]]:
    """Listening (address, port) pairs from /proc/net/tcp or /proc/net/tcp6 text."""
    out: set[tuple[str, int]] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _TCP_LISTEN:
            continue
        hexaddr, hexport = fields[1].split(":")
        raw = bytes.fromhex(hexaddr)
        # The kernel prints each 32-bit word in host (little-endian) order.
        packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        addr = ipaddress.IPv6Address(packed) if ipv6 else ipaddress.IPv4Address(packed)
        out.add((str(addr), int(hexport, 16)))
    return out


# -- reads -------------------------------------------------------------------------------


def live_argv(pid: int) -> tuple[str, ...] | None:
    """argv of `pid` if it is a running (not zombie) process with an argv, else None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return live_argv_of(cmdline, stat)


def read_pid_file(path: str) -> int | None:
    text = read_text(path)
    return parse_pid(text) if text else None


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def netns_id(pid: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the network namespace `pid` is in; None if it has gone."""
    return _inode(f"/proc/{pid}/ns/net")


def named_netns_id(name: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the named namespace /run/netns/<name>; None if it does not exist."""
    return _inode(f"/run/netns/{name}")


def pid_in_netns(pid: int, netns: str | None) -> bool:
    """`pid` is in the named namespace (None or "": in ours)."""
    want = named_netns_id(netns) if netns else _inode("/proc/self/ns/net")
    have = netns_id(pid)
    return have is not None and want is not None and have == want


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """TCP listeners in the network namespace of `pid` (both families)."""
    out: set[tuple[str, int]] = set()
    for name, v6 in (("tcp", False), ("tcp6", True)):
        text = read_text(f"/proc/{pid}/net/{name}")
        if text:
            out |= parse_proc_net_tcp(text, ipv6=v6)
    return out


def daemon_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a daemon we start (from `environ`, default ours): PATH only.
    dnsmasq and haproxy need nothing of ours, and proxy variables must not leak into them."""
    env = os.environ if environ is None else environ
    return {"PATH": env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
