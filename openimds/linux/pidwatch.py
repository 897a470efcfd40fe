"""Know within milliseconds when a process an agent supervises exits: one pidfd per pid.

The DHCP and L3 agents run daemonised children (dnsmasq, haproxy) that must outlive the agent
so a restarted agent can adopt them; they are therefore not the agent's children and SIGCHLD
or `waitpid` cannot see them die. A pidfd (`pidfd_open(2)`, Linux 5.3) can: it becomes
readable the moment the process exits, whoever its parent is, and it refers to that one
process, so a recycled pid can never be confused with it. The pidfds sit in the asyncio loop as
readers; an exit calls `on_exit(key, pid)` on the loop, and the agent requeues the key at once.

`CrashBackoff` is the pure half: how long to wait before restarting a child that keeps dying,
so a crash loop costs a bounded amount of work instead of a fork per millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["CrashBackoff", "PidWatcher"]

LOG = logging.getLogger(__name__)


@dataclass
class CrashBackoff:
    """Delay before restarting after a crash: none for a crash after a calm period (the usual
    kill -9 or OOM kill, answered at once), doubling from `base` for each further crash that
    follows the previous one within `calm` seconds, up to `cap`."""

    base: float = 0.25
    cap: float = 30.0
    calm: float = 10.0
    _last: dict[str, float] = field(default_factory=dict)
    _streak: dict[str, int] = field(default_factory=dict)

    def record(self, key: str, now: float) -> float:
        """Note a crash of `key`'s child at monotonic time `now`; return the restart delay."""
        last = self._last.get(key)
        streak = self._streak.get(key, 0) + 1 if last is not None and now - last < self.calm else 0
        self._last[key] = now
        self._streak[key] = streak
        return 0.0 if streak == 0 else min(self.base * 2 ** (streak - 1), self.cap)

    def forget(self, key: str) -> None:
        self._last.pop(key, None)
        self._streak.pop(key, None)


class PidWatcher:
    """pid exit notifications through pidfds registered on the running asyncio loop.

    `sync(key, pids)` makes the watched set of `key` exactly `pids` (new ones are opened,
    others closed); a pid that is already gone when opened is reported at once. Call from the
    loop's thread only.
    """

    def __init__(self, on_exit: Callable[[str, int], None]) -> None:
        self.on_exit = on_exit
        self._fds: dict[tuple[str, int], int] = {}

    def sync(self, key: str, pids: Iterable[int]) -> None:
        wanted = set(pids)
        for k, pid in [kp for kp in self._fds if kp[0] == key and kp[1] not in wanted]:
            self._close(k, pid)
        for pid in sorted(wanted):
            if (key, pid) not in self._fds:
                self._open(key, pid)

    def watched(self, key: str | None = None) -> set[tuple[str, int]]:
        return {kp for kp in self._fds if key is None or kp[0] == key}

    def close(self) -> None:
        for key, pid in list(self._fds):
            self._close(key, pid)

    def _open(self, key: str, pid: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Gone between the reconcile that found it and now: the same as an exit seen later.
            loop.call_soon(self.on_exit, key, pid)
            return
        self._fds[(key, pid)] = fd
        loop.add_reader(fd, self._exited, key, pid)

    def _exited(self, key: str, pid: int) -> None:
        self._close(key, pid)
        self.on_exit(key, pid)

    def _close(self, key: str, pid: int) -> None:
        fd = self._fds.pop((key, pid), None)
        if fd is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
