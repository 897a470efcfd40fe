"""PortIndex: loading, applying changes, lookups; plain values, no sockets."""

from __future__ import annotations

from openimds.agent.index import (
    PortEntry,
    PortIndex,
    PortRemoved,
    PortUpsert,
    RouterRemoved,
    RouterUpsert,
)


def port(pid: str, net: str, ip: str, *, device: str = "vm", owner: str = "compute:nova",
         mac: str = "fa:16:3e:00:00:01", project: str = "p1") -> PortEntry:
    return PortEntry.from_api({
        "id": pid, "network_id": net, "mac_address": mac,
        "fixed_ips": [{"subnet_id": "s", "ip_address": ip}],
        "device_id": device, "device_owner": owner, "project_id": project,
    })


def test_from_api_normalises_and_accepts_tenant_id() -> None:
    entry = PortEntry.from_api({
        "id": "p", "network_id": "n", "mac_address": "FA:16:3E:AA:BB:CC",
        "fixed_ips": [{"ip_address": "FE80::0:1"}, {"ip_address": "garbage"}, {}],
        "device_id": "d", "device_owner": "compute:az1", "tenant_id": "t",
    })
    assert entry.ips == ("fe80::1",)
    assert entry.mac_address == "fa:16:3e:aa:bb:cc"
    assert entry.project_id == "t"
    assert entry.is_instance_port


def test_replace_then_lookup_overlapping_networks() -> None:
    idx = PortIndex()
    idx.replace(7, [port("a", "net1", "10.0.0.5", device="vm1"),
                    port("b", "net2", "10.0.0.5", device="vm2")], routers=["r"])
    assert idx.revision == 7
    assert [p.device_id for p in idx.ports_with_ip("net1", "10.0.0.5")] == ["vm1"]
    assert [p.device_id for p in idx.ports_with_ip("net2", "10.0.0.5")] == ["vm2"]
    assert idx.ports_with_ip("net3", "10.0.0.5") == ()


def test_replace_forgets_everything_before() -> None:
    idx = PortIndex()
    idx.replace(1, [port("a", "net1", "10.0.0.5")], routers=["r"])
    idx.replace(2, [], routers=[])
    assert len(idx) == 0
    assert idx.ports_with_ip("net1", "10.0.0.5") == ()
    assert not idx.has_router("r")


def test_update_moves_the_port_to_its_new_address() -> None:
    idx = PortIndex()
    idx.replace(1, [port("a", "net1", "10.0.0.5")], routers=[])
    idx.apply(PortUpsert(port("a", "net1", "10.0.0.6")), revision=2)
    assert idx.ports_with_ip("net1", "10.0.0.5") == ()
    assert [p.id for p in idx.ports_with_ip("net1", "10.0.0.6")] == ["a"]
    assert idx.revision == 2


def test_delete_then_reuse_ip_resolves_to_new_owner() -> None:
    idx = PortIndex()
    idx.replace(1, [port("a", "net1", "10.0.0.5", device="old")], routers=[])
    idx.apply(PortRemoved("a"), revision=2)
    idx.apply(PortUpsert(port("b", "net1", "10.0.0.5", device="new")), revision=3)
    assert [p.device_id for p in idx.ports_with_ip("net1", "10.0.0.5")] == ["new"]


def test_apply_is_idempotent_and_revision_never_goes_back() -> None:
    idx = PortIndex()
    idx.apply(PortUpsert(port("a", "net1", "10.0.0.5")), revision=5)
    idx.apply(PortUpsert(port("a", "net1", "10.0.0.5")), revision=4)
    idx.apply(PortRemoved("zzz"))
    assert len(idx.ports_with_ip("net1", "10.0.0.5")) == 1
    assert idx.revision == 5


def test_router_networks_follow_interface_ports() -> None:
    idx = PortIndex()
    iface = "network:router_interface"
    idx.replace(1, [port("i1", "net1", "10.0.0.1", device="r1", owner=iface),
                    port("i2", "net2", "10.0.1.1", device="r1", owner=iface),
                    port("i3", "net2", "10.0.2.1", device="r1", owner=iface),
                    port("x", "net9", "10.9.0.1", device="r1", owner="network:dhcp")],
                routers=["r1", "r2"])
    assert idx.router_networks("r1") == ("net1", "net2")
    assert idx.router_networks("r2") == ()
    assert idx.has_router("r2")
    idx.apply(PortRemoved("i2"))
    assert idx.router_networks("r1") == ("net1", "net2")  # i3 still on net2
    idx.apply(PortRemoved("i3"))
    assert idx.router_networks("r1") == ("net1",)
    idx.apply(RouterRemoved("r2"))
    assert not idx.has_router("r2")
    idx.apply(RouterUpsert("r3"))
    assert idx.has_router("r3")


def test_lookup_by_mac() -> None:
    idx = PortIndex()
    idx.apply(PortUpsert(port("a", "net1", "10.0.0.5", mac="52:54:00:de:5b:bf")))
    assert [p.id for p in idx.ports_with_mac("net1", "52:54:00:DE:5B:BF")] == ["a"]
    assert idx.ports_with_mac("net2", "52:54:00:de:5b:bf") == ()


def test_host_scoped_index_keeps_only_ports_bound_to_its_host() -> None:
    from openimds.agent.index import PortEntry, PortIndex, PortUpsert

    def entry(host: str) -> PortEntry:
        return PortEntry.from_api({"id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:0:0:1",
                                   "fixed_ips": [{"ip_address": "10.0.0.5"}],
                                   "device_id": "vm", "device_owner": "compute:nova",
                                   "binding:host_id": host})

    index = PortIndex("cmp-1")
    index.replace(1, [entry("cmp-2")], [])
    assert index.ports_with_ip("n1", "10.0.0.5") == ()  # bound elsewhere: not ours
    index.apply(PortUpsert(entry("cmp-1")))  # migrated here
    assert [p.id for p in index.ports_with_ip("n1", "10.0.0.5")] == ["p1"]
    index.apply(PortUpsert(entry("cmp-3")))  # and away again
    assert index.ports_with_ip("n1", "10.0.0.5") == () and len(index) == 0
    unscoped = PortIndex()
    unscoped.replace(1, [entry("cmp-2")], [])
    assert len(unscoped) == 1


def test_ports_sharing_an_address_are_all_found_until_each_is_removed() -> None:
    idx = PortIndex()
    same_mac = "fa:16:3e:00:00:09"
    idx.replace(1, [port("a", "net1", "10.0.0.5", device="vm1", mac=same_mac),
                    port("b", "net1", "10.0.0.5", device="vm2", mac=same_mac),
                    port("c", "net1", "10.0.0.5", device="vm3", mac=same_mac)], routers=[])
    assert [p.id for p in idx.ports_with_ip("net1", "10.0.0.5")] == ["a", "b", "c"]
    assert [p.id for p in idx.ports_with_mac("net1", same_mac.upper())] == ["a", "b", "c"]
    idx.apply(PortRemoved("b"))
    assert [p.id for p in idx.ports_with_ip("net1", "10.0.0.5")] == ["a", "c"]
    idx.apply(PortRemoved("a"))
    assert [p.id for p in idx.ports_with_ip("net1", "10.0.0.5")] == ["c"]
    idx.apply(PortUpsert(port("c", "net1", "10.0.0.5", device="vm3", mac=same_mac)))
    assert [p.id for p in idx.ports_with_ip("net1", "10.0.0.5")] == ["c"]  # idempotent
    idx.apply(PortRemoved("c"))
    assert idx.ports_with_ip("net1", "10.0.0.5") == () == idx.ports_with_mac("net1", same_mac)
    idx.apply(PortUpsert(port("d", "net1", "10.0.0.5", device="vm4")))
    assert [p.device_id for p in idx.ports_with_ip("net1", "10.0.0.5")] == ["vm4"]
