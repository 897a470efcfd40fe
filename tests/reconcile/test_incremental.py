"""Incremental consumers (issue 14, item 3): a change re-plans only the keys it touches, and
what the agent then holds equals what a full listing gives.

No kernel: the DHCP agent here plans (model + `desired_dhcp_state`) and records what it
planned instead of applying it, so these run without root.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from openimds.dhcp import agent as dhcp_agent_module
from openimds.dhcp.agent import DhcpAgent
from openimds.dhcp.plan import DhcpOptions, DhcpPlan, desired_dhcp_state
from openimds.reconcile import (
    Change,
    MemoryInventory,
    Snapshot,
    advance_snapshot,
    read_snapshot,
)
from openimds.rows import compact_row

NOW = datetime(2026, 12, 7, tzinfo=UTC)
ROUTER_PORTS = ("device_owner", frozenset({"network:router_interface"}))


# ---- advance_snapshot keeps its groupings equal to a full regrouping ---------------------


def _groups(snap: Snapshot) -> dict[Any, dict[str, list[str]]]:
    out = {}
    for gkey in (("ports", "network_id", None), ("ports", "device_id", ROUTER_PORTS),
                 ("subnets", "network_id", None)):
        resource, key, where = gkey
        out[gkey] = {k: [r["id"] for r in v]
                     for k, v in snap.grouped(resource, key, where).items()}
    return out


def test_advanced_groupings_equal_a_fresh_grouping_after_random_batches() -> None:
    rng = random.Random(14)
    nets = [f"n{i}" for i in range(6)]
    owners = ["compute:nova", "network:router_interface", "network:dhcp"]

    def port(pid: str) -> dict[str, Any]:
        return {"id": pid, "network_id": rng.choice([*nets, ""]),
                "device_owner": rng.choice(owners), "device_id": rng.choice(["r1", "r2", "vm"]),
                "v": rng.random()}

    ports = [port(f"p{i}") for i in range(60)]
    snap = Snapshot(1, subnets=[{"id": f"s{i}", "network_id": nets[i % 6]} for i in range(8)],
                    ports=ports)
    _groups(snap)  # made on the old snapshot: advance_snapshot carries them over
    for rev in range(2, 60):
        batch: dict[tuple[str, str], Any] = {}
        for _ in range(rng.randint(1, 4)):
            pid = f"p{rng.randint(0, 80)}"
            batch[("ports", pid)] = None if rng.random() < 0.25 else port(pid)
        if rng.random() < 0.2:
            sid = f"s{rng.randint(0, 10)}"
            batch[("subnets", sid)] = {"id": sid, "network_id": rng.choice(nets)}
        new = advance_snapshot(snap, batch, rev)
        fresh = Snapshot(rev, snap.networks, new.subnets, new.ports, new.routers)
        assert _groups(new) == _groups(fresh), rev  # same groups, same list order
        assert new == fresh
        snap = new


def test_a_change_remakes_only_the_groups_it_is_in() -> None:
    ports = [{"id": f"a{i}", "network_id": "A"} for i in range(3)] + \
        [{"id": f"b{i}", "network_id": "B"} for i in range(3)]
    old = Snapshot(1, ports=ports)
    before = old.grouped("ports", "network_id")
    new = advance_snapshot(old, {("ports", "a1"): {"id": "a1", "network_id": "A", "x": 1}}, 2)
    after = new.grouped("ports", "network_id")
    assert after["B"] is before["B"]  # untouched network: the same tuple, not remade
    assert [p.get("x") for p in after["A"]] == [None, 1, None]
    assert [p.get("x") for p in before["A"]] == [None, None, None]  # the old one as it was


# ---- the DHCP agent: owners by row, and a change plans its own network only ----------------


def _inventory() -> MemoryInventory:
    inv = MemoryInventory()
    for net in ("A", "B", "C"):
        inv.put("network", {"id": net, "name": net, "mtu": 1450, "subnets": [f"s{net}"]})
        inv.put("subnet", {"id": f"s{net}", "network_id": net, "cidr": "10.0.0.0/24",
                           "ip_version": 4, "gateway_ip": "10.0.0.1", "enable_dhcp": True})
        inv.put("port", {"id": f"dhcp-{net}", "network_id": net, "device_owner": "network:dhcp",
                         "device_id": f"dhcp{net}", "mac_address": "fa:16:3e:00:00:02",
                         "fixed_ips": [{"subnet_id": f"s{net}", "ip_address": "10.0.0.2"}],
                         "created_at": "2026-01-01T00:00:00Z", "name": "", "status": "ACTIVE"})
        for i in range(4):
            inv.put("port", _vm_port(net, i))
    inv.put("router", {"id": "R"})
    for net in ("A", "B"):
        inv.put("port", {"id": f"ri-{net}", "network_id": net, "device_id": "R",
                         "device_owner": "network:router_interface",
                         "mac_address": "fa:16:3e:00:00:01",
                         "fixed_ips": [{"subnet_id": f"s{net}", "ip_address": "10.0.0.1"}],
                         "created_at": "2026-01-01T00:00:00Z"})
    return inv


def _vm_port(net: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"{net}-vm{i}", "network_id": net, "device_owner": "compute:nova",
            "device_id": f"vm-{net}{i}", "mac_address": f"fa:16:3e:00:01:{i:02x}",
            "fixed_ips": [{"subnet_id": f"s{net}", "ip_address": f"10.0.0.{10 + i}"}],
            "created_at": "2026-01-01T00:00:00Z", "name": f"vm{i}", "status": "ACTIVE",
            "description": "not read by the DHCP agent", **extra}


class PlanningDhcpAgent(DhcpAgent):
    """The DHCP agent's key selection and planning, with the plan recorded, not applied."""

    def __init__(self, reader: MemoryInventory, **kw: Any) -> None:
        super().__init__(reader, None, DhcpOptions(), fabric_namespace="unused",  # type: ignore[arg-type]
                         clock=lambda: NOW, **kw)
        self.planned: list[str] = []
        self.plans: dict[str, DhcpPlan | None] = {}

    def prepare(self) -> None:
        pass

    def orphan_keys(self) -> set[str]:
        return set()

    def sweep_bridges(self, snap: Snapshot) -> list[str]:
        return []

    def reconcile_key(self, key: str, snap: Snapshot, now: datetime,
                      log: logging.LoggerAdapter[Any]) -> datetime | None:
        self.planned.append(key)
        network = self._model(snap, key)
        self.plans[key] = desired_dhcp_state(network, self.options, now) if network else None
        return None


def _full_pass(snap: Snapshot) -> dict[str, DhcpPlan | None]:
    """Every network's plan from a snapshot, by a fresh agent (nothing carried over)."""
    fresh = PlanningDhcpAgent(MemoryInventory())
    out = {}
    for key in sorted(fresh.keys(snap)):
        network = fresh._model(snap, key)
        out[key] = desired_dhcp_state(network, fresh.options, NOW) if network else None
    return out


async def test_row_owners_answer_what_the_whole_owners_map_says() -> None:
    inv = _inventory()
    agent = PlanningDhcpAgent(inv)
    snap = await read_snapshot(inv, agent.listing)
    owners = agent.owners(snap)
    for (resource, rid), keys in owners.items():
        assert agent.row_owners(snap, resource, rid) == keys, (resource, rid)
    assert agent.row_owners(snap, "port", "never-seen") is None
    assert agent.row_owners(snap, "router", "R") == {"A", "B"}


async def test_a_port_change_plans_its_network_only_and_equals_a_full_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    modelled: list[str] = []
    real = dhcp_agent_module.networks_from_neutron

    def counting(networks: Any, subnets: Any, ports: Any) -> Any:
        made = real(networks, subnets, ports)
        modelled.extend(made)
        return made

    monkeypatch.setattr(dhcp_agent_module, "networks_from_neutron", counting)
    inv = _inventory()
    agent = PlanningDhcpAgent(inv, watch_timeout=0.2, resync_interval=3600)
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(inv.revision)
        assert sorted(agent.planned) == ["A", "B", "C"]
        listings = inv.snapshots

        async def change(rev: int) -> tuple[list[str], list[str]]:
            agent.planned.clear()
            modelled.clear()
            await agent.wait_synced(rev)
            return sorted(agent.planned), sorted(modelled)

        old = agent.snapshot
        assert old is not None
        b_ports = old.grouped("ports", "network_id")["B"]
        # One port of A renamed: A is planned, B and C are not even modelled.
        assert await change(inv.put("port", _vm_port("A", 1, name="renamed"))) == (["A"], ["A"])
        new = agent.snapshot
        assert new is not None and new.grouped("ports", "network_id")["B"] is b_ports
        # A port created on C, one deleted on B, a subnet of C changed.
        assert await change(inv.put("port", _vm_port("C", 9))) == (["C"], ["C"])
        assert await change(inv.delete("port", "B-vm2")) == (["B"], ["B"])
        subnet = {"id": "sC", "network_id": "C", "cidr": "10.0.0.0/24", "ip_version": 4,
                  "gateway_ip": "10.0.0.1", "enable_dhcp": True,
                  "dns_nameservers": ["10.0.0.53"]}
        assert await change(inv.put("subnet", subnet)) == (["C"], ["C"])
        # A router row touches the networks it has interfaces on.
        assert await change(inv.put("router", {"id": "R", "name": "x"})) == (["A", "B"],
                                                                             ["A", "B"])
        assert inv.snapshots == listings  # all of it without a relisting
        # What the agent holds and plans equals a full listing's.
        full = await read_snapshot(inv, agent.listing)
        assert agent.snapshot == full
        assert {k: agent.plans[k] for k in sorted(agent.plans)} == _full_pass(full)
        assert agent.plans["C"] is not None and agent.plans["C"] == _full_pass(full)["C"]
    finally:
        agent.stop()
        await task


async def test_the_dhcp_snapshot_keeps_only_the_port_fields_it_reads() -> None:
    inv = _inventory()
    agent = PlanningDhcpAgent(inv, watch_timeout=0.2, resync_interval=3600)
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(inv.revision)
        await agent.wait_synced(inv.put("port", _vm_port("A", 7)))
        assert agent.snapshot is not None
        for port in (agent.snapshot.find("ports", "A-vm0"), agent.snapshot.find("ports", "A-vm7")):
            assert port is not None and "description" not in port and "name" not in port
            assert port["fixed_ips"][0]["ip_address"].startswith("10.0.0.")
    finally:
        agent.stop()
        await task


async def test_a_resync_reuses_the_rows_it_already_holds() -> None:
    inv = _inventory()
    agent = PlanningDhcpAgent(inv, watch_timeout=0.2, resync_interval=3600)
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(inv.revision)
        old = agent.snapshot
        assert old is not None
        inv.put("port", _vm_port("A", 0, mac_address="fa:16:3e:00:09:99"))  # one changed row
        await agent.full_sync()
        new = agent.snapshot
        assert new is not old and new == await read_snapshot(inv, agent.listing)
        assert new.find("ports", "A-vm1") is old.find("ports", "A-vm1")
        assert new.find("ports", "A-vm0") is not old.find("ports", "A-vm0")
    finally:
        agent.stop()
        await task


async def test_a_late_delete_after_a_resync_still_reaches_its_network() -> None:
    """A resync's listing may already lack a row whose delete the feed brings later: the
    memo (rows gone from the inventory) still maps it to its network."""
    inv = _inventory()
    agent = PlanningDhcpAgent(inv)
    first = await read_snapshot(inv, agent.listing)
    agent._take(first)
    inv.delete("port", "B-vm0")
    second = await read_snapshot(inv, agent.listing)
    agent._take(second)  # a full listing: B-vm0 is gone from it
    assert agent._memo == {("port", "B-vm0"): {"B"}}
    assert agent.keys_for(Change(99, "port", "B-vm0", "delete"), second, second) == {"B"}
    # Rows still listed are answered by the snapshots, not kept in the memo.
    assert agent.keys_for(Change(99, "port", "A-vm0", "update"), second, second) == {"A"}


def test_compact_rows_of_one_layout_compare_by_value() -> None:
    a = compact_row({"id": "p", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.1"}]})
    b = compact_row({"id": "p", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.1"}]})
    c = compact_row({"id": "p", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.2"}]})
    assert a == b and a is not b and a != c
    assert a == {"id": "p", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.1"}]}


async def test_l3_row_owners_and_models_answer_what_the_full_pass_says() -> None:
    from openimds.l3.agent import L3Agent
    from openimds.l3.model import routers_from_neutron
    from openimds.l3.plan import L3Options

    inv = _inventory()
    inv.put("router", {"id": "R2", "ha": True, "ha_vr_id": 3})
    inv.put("port", {"id": "ha-1", "network_id": "C", "device_id": "R2",
                     "device_owner": "network:router_ha_interface", "binding:host_id": "h1",
                     "mac_address": "fa:16:3e:00:00:03",
                     "fixed_ips": [{"subnet_id": "sC", "ip_address": "10.0.0.3"}]})
    inv.put("port", {"id": "ri-C", "network_id": "C", "device_id": "R2",
                     "device_owner": "network:router_interface",
                     "mac_address": "fa:16:3e:00:00:04",
                     "fixed_ips": [{"subnet_id": "sC", "ip_address": "10.0.0.4"}]})
    agent = L3Agent(inv, None, L3Options(), fabric_namespace="unused")  # type: ignore[arg-type]
    snap = await read_snapshot(inv, agent.listing)
    owners = agent.owners(snap)
    assert owners[("network", "C")] == {"R2"} and owners[("subnet", "sA")] == {"R"}
    for (resource, rid), keys in owners.items():
        assert agent.row_owners(snap, resource, rid) == keys, (resource, rid)
    whole = routers_from_neutron(snap.routers, snap.ports, snap.subnets, snap.networks)
    assert {rid: agent._model(snap, rid) for rid in snap.row_ids("routers")} == whole
    assert whole["R2"].ha is not None and len(whole["R"].interfaces) == 2


async def test_l2_row_owners_and_ha_hosts_answer_what_the_full_pass_says() -> None:
    from openimds.l2.agent import L2Agent
    from openimds.l2.plan import ha_router_hosts

    inv = _inventory()
    for host, rid in (("h1", "ha-1"), ("h2", "ha-2")):
        inv.put("port", {"id": rid, "network_id": "HA", "device_id": "R",
                         "device_owner": "network:router_ha_interface",
                         "binding:host_id": host})
    snap = await read_snapshot(inv)
    agent = L2Agent.__new__(L2Agent)  # owners need no applier, options or peers
    owners = agent.owners(snap)
    assert owners[("port", "ha-1")] == {"HA", "A", "B"}
    for (resource, rid), keys in owners.items():
        assert agent.row_owners(snap, resource, rid) == keys, (resource, rid)
    whole = ha_router_hosts(snap.ports)
    for net in ("A", "B", "C", "HA"):
        ports = snap.grouped("ports", "network_id").get(net, ())
        assert agent._ha_hosts(snap, net, ports) == whole.get(net, set()), net
    assert whole["A"] == {"h1", "h2"}
