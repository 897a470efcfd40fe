"""Liveness and placement decisions as tables (control/scheduling.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openimds.control.scheduling import AgentView, is_alive, pick_agents, pick_host

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("age", "down_time", "alive"), [
    (0, 75, True),
    (75, 75, True),
    (75.001, 75, False),
    (300, 75, False),
    (-5, 75, True),  # a heartbeat "in the future" (another replica's clock): alive
    (2, 1, False),
])
def test_is_alive(age: float, down_time: float, alive: bool) -> None:
    assert is_alive(NOW - timedelta(seconds=age), NOW, down_time) is alive


def test_is_alive_accepts_naive_utc_from_sqlite() -> None:
    naive = (NOW - timedelta(seconds=10)).replace(tzinfo=None)
    assert is_alive(naive, NOW, 75) and not is_alive(naive, NOW, 5)


def a(aid: str, host: str, load: int = 0, alive: bool = True, up: bool = True) -> AgentView:
    return AgentView(aid, host, alive, up, load)


@pytest.mark.parametrize(("agents", "host"), [
    ([], None),
    ([a("1", "c2", 3), a("2", "c1", 5)], "c2"),
    ([a("1", "c2", 3), a("2", "c1", 3)], "c1"),  # tie: by name
    ([a("1", "c1", 0, alive=False), a("2", "c2", 9)], "c2"),
    ([a("1", "c1", 0, up=False), a("2", "c2", 9)], "c2"),
    ([a("1", "c1", alive=False), a("2", "c2", up=False)], None),
])
def test_pick_host(agents: list[AgentView], host: str | None) -> None:
    assert pick_host(agents) == host


@pytest.mark.parametrize(("agents", "current", "count", "expected"), [
    # fresh: least loaded, distinct hosts
    ([a("d1", "n1", 2), a("d2", "n2", 1), a("d3", "n3", 0)], [], 2, ["d3", "d2"]),
    # current ones stay even when others are less loaded
    ([a("d1", "n1", 9), a("d2", "n2", 1), a("d3", "n3", 0)], ["d1"], 2, ["d1", "d3"]),
    # a dead current agent is replaced
    ([a("d1", "n1", 0, alive=False), a("d2", "n2", 5)], ["d1"], 1, ["d2"]),
    # a disabled current agent is replaced too
    ([a("d1", "n1", 0, up=False), a("d2", "n2", 5)], ["d1"], 1, ["d2"]),
    # never two agents on one host
    ([a("d1", "n1"), a("d2", "n1"), a("d3", "n2", 4)], [], 3, ["d1", "d3"]),
    ([a("d1", "n1"), a("d2", "n1")], ["d1", "d2"], 2, ["d1"]),
    # fewer eligible agents than wanted: as many as there are
    ([a("d1", "n1")], [], 3, ["d1"]),
    ([], [], 1, []),
    # fewer wanted than current: keep the first ones
    ([a("d1", "n1"), a("d2", "n2"), a("d3", "n3")], ["d2", "d3"], 1, ["d2"]),
    # unknown current ids (deleted agents) are dropped
    ([a("d1", "n1")], ["gone"], 1, ["d1"]),
])
def test_pick_agents(agents: list[AgentView], current: list[str], count: int,
                     expected: list[str]) -> None:
    assert pick_agents(agents, current, count) == expected
