"""`[DEFAULT] api_workers`: the control-plane API in several processes on one socket, a dead
worker replaced, every worker gone with its supervisor (openimds/runtime.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.node import children

from .test_allinone import REPO, free_port, wait_for


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            return int(resp.status)
    except OSError:
        return 0


def test_api_workers_serve_restart_and_die_with_the_supervisor(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "control.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\nbind_host = 127.0.0.1\n"
                    f"bind_port = {port}\napi_workers = 2\n"
                    f"[database]\nconnection = sqlite:///{tmp_path / 'inventory.sqlite'}\n")
    log_path = tmp_path / "control.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "openimds", "control-api",
                                 "--config-file", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)
    workers: set[int] = set()
    try:
        wait_for(lambda: len(set(children(proc.pid, include_zombies=True))) == 2 and _status(port) == 200
                 or proc.poll() is not None)
        assert proc.poll() is None, log_path.read_text()
        workers = set(children(proc.pid, include_zombies=True))
        # Both workers answer: a request lands on one or the other, and killing one leaves
        # the other serving while the supervisor starts a third.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(set(children(proc.pid, include_zombies=True)) - {victim}) == 2)
        assert _status(port) == 200
        replaced = set(children(proc.pid, include_zombies=True))
        assert victim not in replaced and len(replaced & workers) == 1
        workers |= replaced
        # A supervisor killed outright takes its workers with it (nothing keeps the port).
        proc.kill()
        proc.wait(30)
        wait_for(lambda: not any(_alive(pid) for pid in replaced))
        wait_for(lambda: _status(port) == 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for pid in workers:  # only if the test failed before they went
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log_path.read_text()
    assert "Traceback" not in text, text
    assert text.count("exited (signal 9); starting another") == 1, text
