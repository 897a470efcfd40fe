"""Which address option 121/249 sends 169.254.169.254/32 to: `metadata_next_hop` as a table,
and the opts of seed 002's networks in metadata_mode = distributed."""

from __future__ import annotations

import pytest

from openimds.dhcp.plan import desired_dhcp_state, metadata_mode_of, metadata_next_hop

from .test_plan import ISO, NOW, SEED1, SEED2_DHCP, SEED2_SUBNET, net, port, router_port

D, N = "distributed", "network_node"


@pytest.mark.parametrize(("mode", "isolated", "force", "iso_opt", "dist", "gw", "want"), [
    (N, True, False, True, None, None, "dhcp"),
    (N, True, False, False, None, None, None),
    (N, False, False, True, None, "gw", "gw"),
    (N, False, True, True, None, "gw", "dhcp"),
    (N, True, False, True, "meta", None, "dhcp"),  # network_node ignores a stray port
    (D, True, False, True, "meta", None, "meta"),
    (D, False, False, True, "meta", "gw", "meta"),  # routed subnets too
    (D, True, False, False, "meta", None, "meta"),  # no isolated-metadata option needed
    (D, False, True, True, "meta", "gw", "meta"),
    (D, True, False, True, None, None, "dhcp"),  # no address on this subnet yet: fallback
    (D, False, False, True, None, "gw", "gw"),
])
def test_next_hop_table(mode: str, isolated: bool, force: bool, iso_opt: bool,
                        dist: str | None, gw: str | None, want: str | None) -> None:
    assert metadata_next_hop(mode, isolated=isolated, force_metadata=force,
                             enable_isolated_metadata=iso_opt, dhcp_ip="dhcp",
                             distributed_ip=dist, gateway=gw) == want


def meta_port(subnet: str, ip: str, net_id: str):  # type: ignore[no-untyped-def]
    return port("mp1", "fa:16:3e:00:00:99", [(subnet, ip)], "network:distributed",
                f"qmeta-{net_id}")


def test_seed1_in_distributed_mode_routes_via_the_metadata_port() -> None:
    network = net(SEED1.subnets, [*SEED1.ports, meta_port("s111", "192.168.111.9", SEED1.id)],
                  nid=SEED1.id)
    assert metadata_mode_of(network) == D and metadata_mode_of(SEED1) == N
    plan = desired_dhcp_state(network, ISO, NOW)
    assert plan is not None
    assert plan.opts.splitlines()[:2] == [
        "tag:tag0,option:classless-static-route,169.254.169.254/32,192.168.111.9",
        "tag:tag0,249,169.254.169.254/32,192.168.111.9"]
    # The DHCP namespace keeps its proxy: guests leased before the switch still route there.
    assert plan.metadata_proxy


def test_routed_subnet_in_distributed_mode_routes_via_the_metadata_port() -> None:
    nid = "f673b2b9-360f-4815-b308-362e4725fd85"
    network = net([SEED2_SUBNET], [SEED2_DHCP, router_port("rp1", [("s172", "172.31.0.1")]),
                                   meta_port("s172", "172.31.0.9", nid)], nid=nid)
    plan = desired_dhcp_state(network, ISO, NOW)
    assert plan is not None
    assert plan.opts.splitlines()[0] == ("tag:tag0,option:classless-static-route,"
                                         "169.254.169.254/32,172.31.0.9,0.0.0.0/0,172.31.0.1")


def test_retiring_metadata_port_gives_new_leases_the_network_node_route() -> None:
    from dataclasses import replace

    from openimds.dhcp.model import port_from_neutron

    retiring = replace(meta_port("s111", "192.168.111.9", SEED1.id), retiring=True)
    network = net(SEED1.subnets, [*SEED1.ports, retiring], nid=SEED1.id)
    assert metadata_mode_of(network) == N
    plan = desired_dhcp_state(network, ISO, NOW)
    assert plan is not None and "192.168.111.9" not in plan.opts
    assert plan.opts == desired_dhcp_state(SEED1, ISO, NOW).opts  # type: ignore[union-attr]
    # The mark comes from the port's binding:profile (openimds.metadata_retirement).
    base = {"id": "p", "mac_address": "FA:16:3E:00:00:01", "device_owner": "network:distributed",
            "device_id": "qmeta-x", "fixed_ips": []}
    assert not port_from_neutron(base).retiring
    assert port_from_neutron({**base, "binding:profile": {
        "openimds_metadata_retiring_until": "2026-01-01T00:00:00Z"}}).retiring
