"""Which bridges the DHCP agent may sweep: only of networks it saw and that are gone, and only
while nothing is plugged in (the fabric namespace may be shared with other nodes)."""

from __future__ import annotations

from openimds.dhcp.agent import orphan_bridges
from openimds.linux.fabric import bridge_name
from openimds.linux.observe import Link

GONE = "11111111-aaaa-4aaa-8aaa-000000000001"
BUSY = "22222222-bbbb-4bbb-8bbb-000000000002"
FOREIGN = "33333333-cccc-4ccc-8ccc-000000000003"


def _link(name: str, kind: str | None = None, master: str | None = None) -> Link:
    return Link(name=name, ifindex=1, kind=kind, mac="02:00:00:00:00:01", mtu=1500, up=True,
                master=master, peer_ifindex=None, peer_netnsid=None)


def test_only_empty_bridges_of_gone_networks_we_saw() -> None:
    links = [
        _link(bridge_name(GONE), "bridge"),
        _link(bridge_name(BUSY), "bridge"),
        _link("tapguest1234", "veth", master=bridge_name(BUSY)),
        _link(bridge_name(FOREIGN), "bridge"),  # another node's: never seen by us
        _link("lo"),
    ]
    assert orphan_bridges(links, {GONE, BUSY}) == [bridge_name(GONE)]
    assert orphan_bridges(links, set()) == []
