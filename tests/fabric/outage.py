"""Measure what a guest sees while a service is broken: a poller in the guest namespace
(tests/fabric/guest_poller.py) and the pure arithmetic over its samples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from tests.fabric.lab import CLEAN_ENV, wait_for

POLLER = os.path.join(os.path.dirname(__file__), "guest_poller.py")

Sample = tuple[float, float, bool]  # (attempt started, attempt ended, answered)


def parse_samples(text: str) -> list[Sample]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((float(parts[0]), float(parts[1]), parts[2] == "1"))
    return out


def outage(samples: Sequence[Sample], t_fault: float) -> tuple[float, int] | None:
    """(seconds from the end of the last success that started before `t_fault` to the end of
    the first success that *started* after it, failed attempts in between), or None while
    there is none yet. Only an attempt begun after the fault proves the service is back: one
    answered before it may be logged after it (a descheduled poller)."""
    before = [end for start, end, ok in samples if ok and start <= t_fault]
    after = [end for start, end, ok in samples if ok and start > t_fault]
    if not after:
        return None
    begin = before[-1] if before else t_fault
    failed = sum(1 for start, _end, ok in samples if not ok and begin <= start < after[0])
    return after[0] - begin, failed


class GuestPoller:
    """`python3 guest_poller.py ARGS` inside `netns`, stopped by pid in `stop()`."""

    def __init__(self, netns: str, *args: str) -> None:
        self._out = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives until stop()
            prefix="oit-poll-", suffix=".log", delete=False
        )
        # The system python: the poller is stdlib only and needs no venv inside the guest.
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, python, POLLER, *args],
            stdout=self._out, stderr=subprocess.DEVNULL, env=CLEAN_ENV,
        )

    def samples(self) -> list[Sample]:
        with open(self._out.name) as fh:
            return parse_samples(fh.read())

    def wait_success_after(self, t: float, timeout: float) -> tuple[float, int]:
        """Block until the guest succeeds after time `t`; the outage around `t`."""
        return wait_for(lambda: outage(self.samples(), t), timeout=timeout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._out.close()
        os.unlink(self._out.name)
