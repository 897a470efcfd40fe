"""The APIs start before their database without a traceback (issue 16: no traceback for an
expected condition; the all-in-one and service managers start everything at once).

`openimds metadata-api` and `openimds control-api` run for real against a SQLite path that
cannot be opened yet (a directory stands where the file goes). Each must log one WARNING and
wait, then migrate and serve as soon as the path is usable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .test_allinone import REPO, free_port, wait_for


def _get(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            return int(resp.status)
    except OSError:
        return 0


@pytest.mark.parametrize("service", ["metadata-api", "control-api"])
def test_service_waits_for_its_database(tmp_path: Path, service: str) -> None:
    db = tmp_path / "inventory.sqlite"
    db.mkdir()  # no connection can open it until this directory goes
    port = free_port()
    conf = tmp_path / "service.conf"
    conf.write_text(
        f"[DEFAULT]\nstate_path = {tmp_path}\nbind_host = 127.0.0.1\nbind_port = {port}\n"
        f"metadata_listen = 127.0.0.1\nmetadata_listen_port = {port}\nmetadata_workers = 1\n"
        f"metrics_listen_port = 0\n[database]\nconnection = sqlite:///{db}\n"
        "[neutron]\nmetadata_proxy_shared_secret = s3cret\n")
    log_path = tmp_path / "service.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "openimds", service, "--config-file",
                                 str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO)
    try:
        wait_for(lambda: "unreachable" in log_path.read_text() or proc.poll() is not None)
        assert proc.poll() is None, log_path.read_text()
        db.rmdir()
        wait_for(lambda: _get(port) == 200 or proc.poll() is not None)
        assert proc.poll() is None, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert "Traceback" not in text, text
    assert text.count("unreachable") == 1 and "schema up to date" in text, text
