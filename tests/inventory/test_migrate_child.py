"""`upgrade_in_child`: the control-api migrates in a forked child, so Alembic never occupies
the server's memory (issue 14: control-api RSS at 100k ports), and that child never outlives
the service (a service stopped while it waits for its database stops the wait too)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from openimds.inventory.migrate import UpgradeFailed, upgrade_in_child
from openimds.inventory.store import Store
from tests.fabric.lab import wait_for

REPO = Path(__file__).resolve().parents[2]


def _wait(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    wait_for(predicate, timeout=timeout)  # the suite's one condition poll


def test_the_child_migrates_and_the_caller_never_loads_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'inv.sqlite'}"
    # A fresh interpreter: this test process may have imported Alembic already.
    code = (
        "import sys\n"
        "from openimds.inventory.migrate import upgrade_in_child\n"
        f"upgrade_in_child({url!r})\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('alembic', 'mako', 'pygments'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    store = Store(url)
    try:
        with store.read() as s:
            tables = set(inspect(s.get_bind()).get_table_names())
            version = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        store.dispose()
    assert {"ports", "instances", "changes", "alembic_version"} <= tables
    assert version


def test_a_failed_upgrade_raises_in_the_caller(tmp_path: Path) -> None:
    with pytest.raises(UpgradeFailed, match="status 1"):
        upgrade_in_child("nosuchdialect://nowhere/db")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in task.read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_waiting_child_dies_with_its_caller(tmp_path: Path) -> None:
    db = tmp_path / "inv.sqlite"
    db.mkdir()  # no connection can open it: the child waits for the database
    code = (
        "from openimds.inventory.migrate import upgrade_in_child\n"
        f"upgrade_in_child('sqlite:///{db}', retry_every=0.1)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _children(caller.pid))
        [child] = _children(caller.pid)
        assert _alive(child)
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait(10)
        _wait(lambda: not _alive(child))
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
