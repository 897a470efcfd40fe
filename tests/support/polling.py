"""A guest's metadata poll loop for node-loss tests and benches (issue 11 item 5): one JSON line
per answer, `[time, status, uuid]` (status 0 = connection error/timeout), every 200 ms."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

from tests.support.multihost import PYTHON, MultiHostLab, SimHost, _env

__all__ = ["POLLER", "Poller", "outage", "second_outages", "timeline"]

POLLER = """
import json, sys, time, urllib.request, urllib.error
url = 'http://169.254.169.254/openstack/latest/meta_data.json'
out = open(sys.argv[1], 'a', buffering=1)
while True:
    t = time.time()
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            status, uuid = r.status, json.loads(r.read()).get('uuid')
    except urllib.error.HTTPError as e:
        status, uuid = e.code, None
    except (OSError, ValueError) as e:
        status, uuid = 0, type(e).__name__
    out.write(json.dumps([t, status, uuid]) + '\\n')
    time.sleep(max(0.0, 0.2 - (time.time() - t)))
"""


class Poller:
    """A guest's metadata poll loop (inside the guest namespace), one JSON line per answer."""

    def __init__(self, lab: MultiHostLab, host: SimHost, guest: str, name: str) -> None:
        self.log = lab.root / f"poll-{name}.jsonl"
        self.proc = subprocess.Popen(
            host.argv("ip", "netns", "exec", guest, PYTHON, "-c", POLLER, str(self.log)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())

    def answers(self) -> list[tuple[float, int, str | None]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [tuple(json.loads(line)) for line in lines if line.endswith("]")]  # type: ignore[misc]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def outage(answers: list[tuple[float, int, str | None]], cut: float) -> float:
    """Seconds between the last good answer before the cut and the first one after it."""
    before = [t for t, status, _ in answers if status == 200 and t < cut]
    after = [t for t, status, _ in answers if status == 200 and t >= cut]
    assert before and after, "no good answer on one side of the cut"
    return after[0] - before[-1]


def second_outages(answers: list[tuple[float, int, str | None]],
                   since: float) -> list[list[tuple[float, int, str | None]]]:
    """Runs of two or more consecutive unanswered polls from `since` on (a power-on). One
    request alone that times out is a slow answer on a busy machine, not a lost path: losing
    the metadata next hop or the router again costs keepalived's master-down interval
    (3 x advert_int and more), which is several polls. HTTP errors are checked apart."""
    runs: list[list[tuple[float, int, str | None]]] = []
    current: list[tuple[float, int, str | None]] = []
    for answer in answers:
        if answer[0] < since:
            continue
        if answer[1] == 0:
            current.append(answer)
            continue
        if len(current) >= 2:
            runs.append(current)
        current = []
    if len(current) >= 2:
        runs.append(current)
    return runs


def timeline(answers: list[tuple[float, int, str | None]], cut: float) -> str:
    """Runs of equal outcomes, in seconds after the cut: what a failure message shows."""
    runs: list[list[Any]] = []
    for t, status, what in answers:
        key = (status, what if status != 200 else "ok")
        if runs and runs[-1][2] == key:
            runs[-1][1] = t - cut
            runs[-1][3] += 1
        else:
            runs.append([t - cut, t - cut, key, 1])
    return "; ".join(f"{a:.1f}..{b:.1f} {k[0]} {k[1]} x{n}" for a, b, k, n in runs)
