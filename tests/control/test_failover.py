"""Automatic failover decisions (control/failover.py): table tests over plain values."""

from __future__ import annotations

import pytest

from openimds.control.failover import Binding, Move, may_act, plan_failover
from openimds.control.scheduling import AgentView


def agent(host: str, alive: bool = True, up: bool = True) -> AgentView:
    return AgentView(f"id-{host}", host, alive, up)


def b(rid: str, *hosts: str) -> Binding:
    return Binding(rid, tuple(hosts))


CASES = [
    pytest.param([agent("h1"), agent("h2")], [b("n1", "h1"), b("n2", "h2")], [],
                 id="everyone-alive-nothing-moves"),
    pytest.param([agent("h1", alive=False), agent("h2")], [b("n1", "h1")],
                 [Move("n1", "h1", "h2")], id="dead-agent-to-the-alive-one"),
    pytest.param([agent("h1", alive=False), agent("h2"), agent("h3")],
                 [b("n1", "h1"), b("n2", "h1"), b("n3", "h2")],
                 [Move("n1", "h1", "h3"), Move("n2", "h1", "h2")],
                 id="spread-by-load-then-name"),
    pytest.param([agent("h1", alive=False), agent("h2")], [b("n1", "h1", "h2")], [],
                 id="no-host-left-that-does-not-already-serve-it"),
    pytest.param([agent("h1", alive=False), agent("h2"), agent("h3")],
                 [b("n1", "h1", "h2")], [Move("n1", "h1", "h3")],
                 id="several-agents-per-resource-replace-the-dead-slot"),
    pytest.param([agent("h1", alive=False), agent("h2", alive=False)], [b("n1", "h1")], [],
                 id="nobody-alive-nothing-moves"),
    pytest.param([agent("h1", alive=False), agent("h2", up=False)], [b("n1", "h1")], [],
                 id="disabled-agents-take-nothing"),
    pytest.param([agent("h1", alive=False, up=False), agent("h2")], [b("n1", "h1")], [],
                 id="dead-and-disabled-keeps-its-bindings"),
    pytest.param([agent("h1", up=False), agent("h2")], [b("n1", "h1")], [],
                 id="alive-but-disabled-keeps-its-bindings"),
    pytest.param([agent("h2")], [b("n1", "legacy-host"), b("n2", "")], [],
                 id="hosts-without-an-agent-of-this-kind-are-left-alone"),
    pytest.param([agent("h1", alive=False), agent("h2", alive=False), agent("h3")],
                 [b("r1", "h1", "h2")], [Move("r1", "h1", "h3")],
                 id="two-dead-slots-one-target"),
]


@pytest.mark.parametrize(("agents", "bindings", "moves"), CASES)
def test_plan_failover(agents: list[AgentView], bindings: list[Binding],
                       moves: list[Move]) -> None:
    assert plan_failover(agents, bindings) == moves


def test_plan_is_the_same_whatever_order_the_rows_came_in() -> None:
    agents = [agent("h1", alive=False), agent("h2"), agent("h3")]
    bindings = [b(f"n{i}", "h1") for i in range(6)]
    first = plan_failover(agents, bindings)
    assert plan_failover(list(reversed(agents)), list(reversed(bindings))) == first
    # Balanced: three each.
    assert sorted(m.to_host for m in first) == ["h2"] * 3 + ["h3"] * 3


def test_applying_the_moves_leaves_nothing_to_move() -> None:
    agents = [agent("h1", alive=False), agent("h2"), agent("h3")]
    bindings = [b("n1", "h1", "h2"), b("n2", "h1"), b("n3", "h3")]
    moved = {m.resource_id: m for m in plan_failover(agents, bindings)}
    after = [Binding(x.resource_id, tuple(
        moved[x.resource_id].to_host if h == "h1" and x.resource_id in moved else h
        for h in x.hosts)) for x in bindings]
    assert plan_failover(agents, after) == []


@pytest.mark.parametrize(("observed", "down", "ok"), [
    (0.0, 75, False), (74.9, 75, False), (75.0, 75, True), (300.0, 75, True)])
def test_may_act_only_after_a_full_window_of_observation(observed: float, down: float,
                                                         ok: bool) -> None:
    assert may_act(observed, down) is ok
