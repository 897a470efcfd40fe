"""Stopping a daemon a test started that names itself only through a pid file."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.support.node import wait_for


def _pid_in(pidfile: Path) -> int | None:
    with contextlib.suppress(FileNotFoundError):
        words = pidfile.read_text().split()
        if words and words[0].isdigit():
            return int(words[0])
    return None


def stop_by_pidfile(pidfile: Path, timeout: float = 10.0) -> None:
    """SIGTERM the pid a daemon wrote to `pidfile`. A daemon such as dhclient creates the file
    in its parent and fills it in the forked child a moment later, so an empty file means "not
    written yet": wait for the pid rather than leave the daemon running."""
    try:
        pid = wait_for(lambda: _pid_in(pidfile), timeout=timeout)
    except AssertionError:
        return  # never daemonised (it failed before): nothing of ours is running
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
