"""HA routers' pure decisions (control/l3_ha.py)."""

from __future__ import annotations

import pytest

from openimds.control.l3_ha import (
    allocate_vr_id,
    ha_by_default,
    ha_network_name,
    not_enough_agents,
    pick_ha_hosts,
)
from openimds.control.scheduling import AgentView


def agent(host: str, *, alive: bool = True, up: bool = True, load: int = 0) -> AgentView:
    return AgentView(f"id-{host}", host, alive, up, load)


def test_ha_network_is_named_as_neutron_names_it() -> None:
    assert ha_network_name("p1") == "HA network tenant p1"


@pytest.mark.parametrize(("l3_ha", "alive", "expected"), [
    (None, 0, False), (None, 1, False), (None, 2, True), (None, 3, True),
    (True, 0, True), (False, 3, False),
])
def test_ha_by_default_needs_two_alive_agents_unless_set(
        l3_ha: bool | None, alive: int, expected: bool) -> None:
    agents = [agent(f"h{i}") for i in range(alive)] + [agent("dead", alive=False),
                                                       agent("off", up=False)]
    assert ha_by_default(l3_ha, agents) is expected


def test_not_enough_agents_counts_only_eligible_ones() -> None:
    agents = [agent("a"), agent("b", alive=False), agent("c", up=False)]
    assert not_enough_agents(agents, 2) == ("Not enough l3 agents available to ensure HA. "
                                            "Minimum required 2, available 1.")
    assert not_enough_agents([*agents, agent("d")], 2) is None


def test_vr_id_is_the_lowest_free_one() -> None:
    assert allocate_vr_id([]) == 1
    assert allocate_vr_id([1, 2, None, 4]) == 3
    assert allocate_vr_id(range(1, 256)) is None


def test_pick_ha_hosts_fills_up_to_max_least_loaded_first() -> None:
    agents = [agent("a", load=3), agent("b", load=0), agent("c", load=1), agent("d", load=2)]
    assert pick_ha_hosts(agents, [], 3) == ["b", "c", "d"]
    assert pick_ha_hosts(agents, [], 0) == ["b", "c", "d", "a"]  # 0 = all


def test_pick_ha_hosts_only_adds_and_skips_dead_or_disabled() -> None:
    agents = [agent("a"), agent("b", alive=False), agent("c", up=False), agent("d")]
    assert pick_ha_hosts(agents, ["a"], 3) == ["d"]
    # A current host that died keeps its slot here (the failover pass replaces it).
    assert pick_ha_hosts(agents, ["b", "a"], 2) == []
    assert pick_ha_hosts(agents, ["a", "d"], 3) == []
