"""resolve(): table tests over plain index data, no sockets."""

from __future__ import annotations

import ipaddress

import pytest

from openimds.agent import errors
from openimds.agent.index import PortEntry, PortIndex
from openimds.agent.resolve import AgentRequest, guest_address, mac_from_link_local, resolve

IFACE = "network:router_interface"


def port(pid: str, net: str, ip: str, *, device: str, owner: str = "compute:nova",
         project: str = "proj", mac: str = "fa:16:3e:00:00:01") -> PortEntry:
    return PortEntry.from_api({
        "id": pid, "network_id": net, "mac_address": mac,
        "fixed_ips": [{"subnet_id": "s", "ip_address": ip}],
        "device_id": device, "device_owner": owner, "project_id": project,
    })


@pytest.fixture
def index() -> PortIndex:
    idx = PortIndex()
    idx.replace(1, [
        port("p-a", "net-a", "10.0.0.5", device="vm-a", project="proj-a"),
        port("p-b", "net-b", "10.0.0.5", device="vm-b", project="proj-b"),
        port("p-c", "net-c", "10.1.0.7", device="vm-c", project="proj-a"),
        port("ri-a", "net-a", "10.0.0.1", device="r1", owner=IFACE),
        port("ri-c", "net-c", "10.1.0.1", device="r1", owner=IFACE),
        port("ri-b", "net-b", "10.0.0.1", device="r2", owner=IFACE),
        port("dhcp", "net-a", "10.0.0.2", device="dhcp-net-a", owner="network:dhcp"),
        port("dup1", "net-d", "10.4.0.9", device="vm-d1"),
        port("dup2", "net-d", "10.4.0.9", device="vm-d2"),
        port("ll", "net-e", "10.5.0.3", device="vm-e", mac="52:54:00:de:5b:bf"),
    ], routers=["r1", "r2", "r-empty"])
    return idx


OK_CASES = [
    # (forwarded_for, network_ids, router_ids) -> instance, project
    (["10.0.0.5"], ["net-a"], [], "vm-a", "proj-a"),
    (["10.0.0.5"], ["net-b"], [], "vm-b", "proj-b"),
    (["10.0.0.5"], [], ["r1"], "vm-a", "proj-a"),
    (["10.1.0.7"], [], ["r1"], "vm-c", "proj-a"),
    (["10.0.0.5"], [], ["r2"], "vm-b", "proj-b"),
    # haproxy bound on :: hands us IPv4-mapped addresses
    (["::ffff:10.0.0.5"], ["net-b"], [], "vm-b", "proj-b"),
    # a guest-sent X-Forwarded-For is ignored: only the last hop (ours) counts
    (["10.0.0.99", "10.0.0.5"], ["net-a"], [], "vm-a", "proj-a"),
    (["10.1.0.7, 10.0.0.5"], ["net-a"], [], "vm-a", "proj-a"),
    # link-local IPv6 -> MAC from the EUI-64 interface id
    (["fe80::5054:ff:fede:5bbf"], ["net-e"], [], "vm-e", "proj"),
]


@pytest.mark.parametrize(("xff", "nets", "routers", "instance", "project"), OK_CASES)
def test_resolves(index: PortIndex, xff: list[str], nets: list[str], routers: list[str],
                  instance: str, project: str) -> None:
    res = resolve(AgentRequest(xff, nets, routers), index)
    assert (res.instance_id, res.project_id) == (instance, project)


ERROR_CASES = [
    (["10.0.0.5"], ["net-a"], ["r1"], errors.ConflictingIds, 400),
    (["10.0.0.5"], ["net-a", "net-b"], [], errors.ConflictingIds, 400),
    (["10.0.0.5"], [], ["r1", "r1"], errors.ConflictingIds, 400),
    (["10.0.0.5"], [], [], errors.MissingId, 400),
    ([], ["net-a"], [], errors.BadAddress, 400),
    (["not-an-ip"], ["net-a"], [], errors.BadAddress, 400),
    (["10.0.0.5, "], ["net-a"], [], None, 200),  # trailing comma: last non-empty hop
    (["10.9.9.9"], ["net-a"], [], errors.NoPort, 404),
    (["10.0.0.5"], ["net-zzz"], [], errors.NoPort, 404),
    (["10.4.0.9"], ["net-d"], [], errors.AmbiguousAddress, 404),
    (["10.0.0.2"], ["net-a"], [], errors.NotAnInstance, 404),
    (["10.0.0.1"], [], ["r1"], errors.NotAnInstance, 404),
    (["10.0.0.5"], [], ["r-empty"], errors.RouterWithoutNetworks, 404),
    (["10.0.0.5"], [], ["r-unknown"], errors.RouterWithoutNetworks, 404),
    # the router is on net-a and net-c only: 10.0.0.5 on net-b must not leak through r1
    (["10.4.0.9"], [], ["r1"], errors.NoPort, 404),
]


@pytest.mark.parametrize(("xff", "nets", "routers", "exc", "status"), ERROR_CASES)
def test_errors(index: PortIndex, xff: list[str], nets: list[str], routers: list[str],
                exc: type[errors.AgentError] | None, status: int) -> None:
    if exc is None:
        assert resolve(AgentRequest(xff, nets, routers), index).instance_id == "vm-a"
        return
    with pytest.raises(exc) as info:
        resolve(AgentRequest(xff, nets, routers), index)
    assert info.value.status == status


def test_ambiguous_names_the_ports(index: PortIndex) -> None:
    with pytest.raises(errors.AmbiguousAddress) as info:
        resolve(AgentRequest(["10.4.0.9"], ["net-d"], []), index)
    assert info.value.port_ids == ("dup1", "dup2")
    assert "dup1" in (info.value.log_detail or "") and "dup2" in (info.value.log_detail or "")


def test_not_found_text_is_neutrons(index: PortIndex) -> None:
    with pytest.raises(errors.NoPort) as info:
        resolve(AgentRequest(["10.9.9.9"], [], ["r1"]), index)
    assert info.value.text == "Instance was not found on router r1."


@pytest.mark.parametrize(("text", "mac"), [
    ("fe80::5054:ff:fede:5bbf", "52:54:00:de:5b:bf"),
    ("fe80::99", "02:00:00:00:00:99"),
])
def test_mac_from_link_local(text: str, mac: str) -> None:
    assert mac_from_link_local(ipaddress.IPv6Address(text)) == mac


def test_guest_address_unwraps_mapped() -> None:
    assert str(guest_address(["::ffff:192.0.2.1"])) == "192.0.2.1"
    assert str(guest_address(["2001:db8::1"])) == "2001:db8::1"
