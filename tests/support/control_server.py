"""A real `openimds control-api` subprocess on loopback for tests and the multi-host lab.

`running_control_api(state, extra_conf)` bootstraps the admin user, starts the server with the
given extra ini text (e.g. `[ml2]` ranges, `agent_down_time`), waits until it answers and
stops it (by its own handle) on exit. The yielded `Cli` runs `python -m openimds` with the
admin credentials in its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.node import free_port

PYTHON = sys.executable
ADMIN_PW = "lab-admin-pw"


@dataclass
class Cli:
    conf: Path
    url: str
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([PYTHON, "-m", "openimds", *args], capture_output=True,
                              text=True, env=self.env, timeout=60)
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-f", "json").stdout)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A server-side command that reads the database directly (bootstrap, user create)."""
        return self.run(*args, "--config-file", str(self.conf))


@contextmanager
def running_control_api(state: Path, extra_conf: str = "", *,
                        database: str = "") -> Iterator[Cli]:
    port = free_port()
    conf = state / "control.conf"
    db = f"[database]\nconnection = {database}\n" if database else ""
    conf.write_text(f"[DEFAULT]\nstate_path = {state}\nbind_host = 127.0.0.1\n"
                    f"bind_port = {port}\n{extra_conf}\n{db}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    base = Cli(conf, f"http://127.0.0.1:{port}", env)
    base.admin("bootstrap", "--admin-password", ADMIN_PW)
    log = open(state / "control-api.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([PYTHON, "-m", "openimds", "control-api", "--config-file",
                               str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base.url + "/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((state / "control-api.log").read_text()) from None
                time.sleep(0.1)  # polling for the listener, not a fixed wait
        env = {**env, "OS_AUTH_URL": base.url + "/v3", "OS_USERNAME": "admin",
               "OS_PASSWORD": ADMIN_PW, "OS_PROJECT_NAME": "admin"}
        yield Cli(conf, base.url, env)
    finally:
        server.terminate()  # only the server we started, by its handle
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
