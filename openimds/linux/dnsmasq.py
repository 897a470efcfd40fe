"""dnsmasq as a daemon tracked by its pid file: find (verified), start, reload, stop.

Why daemonised rather than a child kept in the foreground: the process must outlive the agent
so that a restarted agent *adopts* it (same pid, same leases in memory) instead of restarting
it. dnsmasq writes its own `--pid-file` before it drops privileges, and in daemon mode the
launching process exits only once the daemon is set up (or with an error status if it could not
bind), so `start` returns when dnsmasq is serving.

A pid is trusted only after /proc proves it: the process is alive (not a zombie), its argv is
dnsmasq with *our* `--pid-file=`, and (for `find`) we report which network namespace it is in.
So a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from openimds.linux import procfs
from openimds.linux.process import CommandFailed, run

__all__ = [
    "DnsmasqProcess",
    "daemon_argv",
    "find_dnsmasq",
    "netns_inode",
    "reload_dnsmasq",
    "start_dnsmasq",
    "stop_dnsmasq",
]

FOREGROUND_FLAG = "--keep-in-foreground"


@dataclass(frozen=True)
class DnsmasqProcess:
    pid: int
    argv: tuple[str, ...]
    netns_inode: tuple[int, int] | None  # (st_dev, st_ino) of /proc/<pid>/ns/net


def daemon_argv(argv: Sequence[str]) -> list[str]:
    """The planned argv without --keep-in-foreground, so dnsmasq daemonises and survives us."""
    return [a for a in argv if a != FOREGROUND_FLAG]


def _pidfile_of(argv: Sequence[str]) -> str | None:
    for a in argv:
        if a.startswith("--pid-file="):
            return a.split("=", 1)[1]
    return None


def _is_ours(pid: int, pidfile: str) -> tuple[str, ...] | None:
    """argv of `pid` if it is a live dnsmasq with our `--pid-file=`, else None."""
    argv = procfs.live_argv(pid)
    return argv if argv is not None and _owns_pidfile(argv, pidfile) else None


def _owns_pidfile(argv: Sequence[str], pidfile: str) -> bool:
    """argv is dnsmasq's, with `--pid-file=<pidfile>` (pure)."""
    return (bool(argv) and os.path.basename(argv[0]) == "dnsmasq"
            and _pidfile_of(argv) == pidfile)


def netns_inode(netns: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of /run/netns/<netns>, to compare with DnsmasqProcess.netns_inode."""
    return procfs.named_netns_id(netns)


def find_dnsmasq(pidfile: str) -> DnsmasqProcess | None:
    """The live dnsmasq that owns `pidfile`, verified through /proc, or None."""
    pid = procfs.read_pid_file(pidfile)
    if pid is None:
        return None
    argv = _is_ours(pid, pidfile)
    if argv is None:
        return None
    return DnsmasqProcess(pid, argv, procfs.netns_id(pid))


def start_dnsmasq(argv: Sequence[str], netns: str, *, timeout: float = 5.0) -> int:
    """Start dnsmasq (daemon mode) in `netns`; return its verified pid."""
    argv = daemon_argv(argv)
    pidfile = _pidfile_of(argv)
    if pidfile is None:
        raise ValueError("dnsmasq argv has no --pid-file: it could never be adopted or stopped")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)
    try:
        run(argv, netns=netns, env=procfs.daemon_env(), timeout=timeout + 5)
    except CommandFailed as exc:
        raise RuntimeError(f"dnsmasq did not start in {netns}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        found = find_dnsmasq(pidfile)
        if found is not None:
            return found.pid
        if time.monotonic() > deadline:
            raise RuntimeError(f"dnsmasq in {netns} wrote no usable pid file {pidfile}")
        time.sleep(0.02)


def _signal(pid: int, pidfile: str, sig: signal.Signals) -> bool:
    # Re-verify right before signalling: the pid may have exited and been reused.
    if _is_ours(pid, pidfile) is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        return True
    return False


def reload_dnsmasq(pid: int, pidfile: str) -> bool:
    """SIGHUP: dnsmasq re-reads its hosts, addn-hosts and opts files. False if not ours."""
    return _signal(pid, pidfile, signal.SIGHUP)


def stop_dnsmasq(pid: int, pidfile: str, *, timeout: float = 5.0) -> None:
    """SIGTERM (then SIGKILL after `timeout`) a verified dnsmasq; remove its pid file."""
    if _signal(pid, pidfile, signal.SIGTERM):
        deadline = time.monotonic() + timeout
        while _is_ours(pid, pidfile) is not None:
            if time.monotonic() > deadline:
                _signal(pid, pidfile, signal.SIGKILL)
                break
            time.sleep(0.02)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)
