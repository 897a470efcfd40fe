"""openimds.reconcile.converge: one applier pass claims, executes with the run's logger, and
releases. Only file actions here (no root needed); the namespace passes are in tests/dhcp and
tests/l3."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from openimds.reconcile.actions import RemoveTree, WriteFile
from openimds.reconcile.claims import Claims
from openimds.reconcile.converge import execute_pass
from openimds.reconcile.executor import Executor


class _Run(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[run-1 {self.extra['key']}] {msg}", kwargs  # type: ignore[index]


def test_a_pass_claims_first_logs_each_action_with_the_run_and_releases_when_unwanted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    claims = Claims(str(tmp_path / "state"), "network")
    log = _Run(logging.getLogger("openimds.test-converge"), {"key": "net-1"})
    target = tmp_path / "net-1" / "opts"
    with caplog.at_level(logging.DEBUG):
        execute_pass(Executor(), claims, "net-1", [WriteFile(str(target), "x\n")],
                     wanted=True, log=log)
    assert target.read_text() == "x\n"
    assert claims.ids() == {"net-1"}
    applied = [r.getMessage() for r in caplog.records if "apply WriteFile" in r.getMessage()]
    assert len(applied) == 1 and applied[0].startswith("[run-1 net-1] apply WriteFile(")
    assert any(r.getMessage() == "[run-1 net-1] 1 actions: WriteFile" for r in caplog.records)

    execute_pass(Executor(), claims, "net-1", [RemoveTree(str(target.parent))], wanted=False,
                 log=log)
    assert not target.parent.exists()
    assert claims.ids() == set()


def test_a_failing_action_keeps_the_claim(tmp_path: Path) -> None:
    """What an interrupted pass may have created stays discoverable as an orphan."""
    claims = Claims(str(tmp_path / "state"), "router")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        execute_pass(Executor(), claims, "r1", [WriteFile(str(blocker / "x"), "y")],
                     wanted=False, log=logging.getLogger("openimds.test-converge"))
    assert claims.ids() == set()  # never claimed: the pass wanted nothing
    with pytest.raises(OSError):
        execute_pass(Executor(), claims, "r1", [WriteFile(str(blocker / "x"), "y")],
                     wanted=True, log=logging.getLogger("openimds.test-converge"))
    assert claims.ids() == {"r1"}


def test_claims_refuse_what_is_not_a_resource_id(tmp_path: Path) -> None:
    claims = Claims(str(tmp_path), "network")
    with pytest.raises(ValueError, match="not a resource id"):
        claims.add("../etc")
    claims.remove("never-added")  # nothing to release is fine
    assert claims.ids() == set()
