"""IPAM: table tests of the pure helpers, property tests (hypothesis) of allocation through the
real operations on a real store, and concurrent creates."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openimds.control import auth, ipam, networks, ports, subnets
from openimds.control.call import Call, Settings
from openimds.control.context import RequestContext
from openimds.control.errors import ApiError, BadRequest, Conflict
from openimds.inventory.migrate import open_store
from openimds.inventory.store import Store

# ---- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize("cidr,gateway,pools", [
    ("10.0.0.0/24", "10.0.0.1", [("10.0.0.2", "10.0.0.254")]),
    ("10.0.0.0/24", None, [("10.0.0.1", "10.0.0.254")]),
    ("10.0.0.0/24", "10.0.0.100", [("10.0.0.1", "10.0.0.99"), ("10.0.0.101", "10.0.0.254")]),
    ("10.0.0.0/24", "10.0.0.254", [("10.0.0.1", "10.0.0.253")]),
    ("10.0.0.0/30", "10.0.0.1", [("10.0.0.2", "10.0.0.2")]),
    ("10.0.0.0/31", None, []),
    ("10.0.0.7/32", None, [("10.0.0.7", "10.0.0.7")]),
    ("fd00::/126", "fd00::1", [("fd00::2", "fd00::3")]),  # no broadcast in IPv6
])
def test_default_pools(cidr: str, gateway: str | None, pools: list[tuple[str, str]]) -> None:
    assert ipam.default_pools(cidr, gateway) == [{"start": s, "end": e} for s, e in pools]


@pytest.mark.parametrize("pools,gateway,kind", [
    ([("10.0.0.0", "10.0.0.5")], None, "InvalidAllocationPool"),        # network address
    ([("10.0.0.250", "10.0.0.255")], None, "InvalidAllocationPool"),    # broadcast
    ([("10.0.0.9", "10.0.0.5")], None, "InvalidAllocationPool"),        # reversed
    ([("10.0.0.2", "10.0.0.9"), ("10.0.0.9", "10.0.0.20")], None, "OverlappingAllocationPools"),
    ([("10.0.0.2", "10.0.0.9")], "10.0.0.5", "GatewayConflictWithAllocationPools"),
    ([("10.0.1.2", "10.0.1.9")], None, "OutOfBoundsAllocationPool"),
])
def test_check_pools_rejects(pools: list[tuple[str, str]], gateway: str | None,
                             kind: str) -> None:
    with pytest.raises(BadRequest) as info:
        ipam.check_pools("10.0.0.0/24", gateway, [{"start": s, "end": e} for s, e in pools])
    assert info.value.type == kind


def test_first_free_skips_used_and_gateway_and_is_lazy_on_ipv6() -> None:
    pools = ipam.parse_pools([{"start": "10.0.0.1", "end": "10.0.0.5"}])
    assert ipam.first_free(pools, {"10.0.0.1", "10.0.0.2"}, "10.0.0.3") == "10.0.0.4"
    assert ipam.first_free(pools, {f"10.0.0.{i}" for i in range(1, 6)}, None) is None
    huge = ipam.parse_pools(ipam.default_pools("fd00::/64", "fd00::1"))
    assert ipam.first_free(huge, {"fd00::2"}, "fd00::1") == "fd00::3"


@pytest.mark.parametrize("ip,router,error", [
    ("10.0.0.0", False, BadRequest), ("10.0.0.255", False, BadRequest),
    ("10.0.1.1", False, BadRequest), ("bogus", False, BadRequest),
    ("10.0.0.1", False, Conflict),
])
def test_check_requested_rejects(ip: str, router: bool, error: type[ApiError]) -> None:
    with pytest.raises(error):
        ipam.check_requested("10.0.0.0/24", "10.0.0.1", ip, router=router)


def test_check_requested_lets_a_router_take_the_gateway() -> None:
    assert ipam.check_requested("10.0.0.0/24", "10.0.0.1", "10.0.0.1", router=True) == "10.0.0.1"


@given(prefix=st.integers(24, 30), gw_index=st.one_of(st.none(), st.integers(1, 300)),
       used_fraction=st.floats(0, 1), seed=st.randoms(use_true_random=False))
def test_first_free_property(prefix: int, gw_index: int | None, used_fraction: float,
                             seed: Any) -> None:
    net = ipaddress.ip_network(f"10.9.0.0/{prefix}")
    hosts = list(net.hosts())
    gateway = str(hosts[gw_index % len(hosts)]) if gw_index is not None else None
    pools = ipam.default_pools(str(net), gateway)
    pool_addrs = {str(a) for a in ipam.candidates(ipam.parse_pools(pools))}
    assert gateway not in pool_addrs
    assert pool_addrs <= {str(h) for h in hosts}
    used = {a for a in sorted(pool_addrs) if seed.random() < used_fraction}
    got = ipam.first_free(ipam.parse_pools(pools), used, gateway)
    free = sorted(pool_addrs - used, key=ipaddress.ip_address)
    assert got == (free[0] if free else None)


# ---- through the real operations on a real store ---------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, RequestContext]]:
    path: Path = tmp_path_factory.mktemp("ipam") / "inv.sqlite"
    store = open_store(f"sqlite:///{path}")
    pid, uid = auth.bootstrap(store, "pw")
    try:
        yield store, RequestContext(uid, "admin", pid, "admin", ("admin",))
    finally:
        store.dispose()


def op(store: Store, ctx: RequestContext, fn: Any, body: Any = None,
       params: dict[str, str] | None = None) -> Any:
    return fn(Call(store=store, settings=Settings(), ctx=ctx, params=params or {},
                   body=body)).body


def new_subnet(store: Store, ctx: RequestContext, cidr: str, **extra: Any) -> dict[str, Any]:
    net = op(store, ctx, networks.create_network, {"network": {}})["network"]
    return dict(op(store, ctx, subnets.create_subnet, {"subnet": {
        "network_id": net["id"], "cidr": cidr, "enable_dhcp": False, **extra}})["subnet"])


def in_pools(ip: str, pools: list[dict[str, str]]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(ipaddress.ip_address(p["start"]) <= addr <= ipaddress.ip_address(p["end"])
               for p in pools)


Step = tuple[str, int]
steps = st.lists(st.tuples(st.sampled_from(["auto", "auto", "explicit", "delete"]),
                           st.integers(0, 40)), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(prefix=st.integers(26, 29), gateway=st.sampled_from(["default", "none", "last"]),
       script=steps)
def test_no_address_is_ever_handed_out_twice(env: tuple[Store, RequestContext], prefix: int,
                                             gateway: str, script: list[Step]) -> None:
    store, ctx = env
    net = ipaddress.ip_network(f"10.77.0.0/{prefix}")
    hosts = [str(h) for h in net.hosts()]
    extra: dict[str, Any] = {}
    if gateway == "none":
        extra["gateway_ip"] = None
    elif gateway == "last":
        extra["gateway_ip"] = hosts[-1]
    sub = new_subnet(store, ctx, str(net), **extra)
    gw, pools = sub["gateway_ip"], sub["allocation_pools"]
    held: dict[str, str] = {}  # port id -> address
    for action, n in script:
        if action == "delete" and held:
            pid = sorted(held)[n % len(held)]
            op(store, ctx, ports.delete_port, params={"id": pid})
            del held[pid]
            continue
        body: dict[str, Any] = {"network_id": sub["network_id"]}
        if action == "explicit":
            body["fixed_ips"] = [{"ip_address": hosts[n % len(hosts)]}]
        try:
            port = op(store, ctx, ports.create_port, {"port": body})["port"]
        except Conflict:
            wanted = body.get("fixed_ips", [{}])[0].get("ip_address")
            # Refused only because the address is taken or is the gateway, or (automatic
            # allocation) because every pool address is held.
            if wanted is not None:
                assert wanted in held.values() or wanted == gw
            else:
                assert all(h in held.values() for h in hosts if in_pools(h, pools))
            continue
        [fip] = port["fixed_ips"]
        ip = fip["ip_address"]
        assert ip not in held.values(), "address handed out twice"
        assert ip != gw
        if action == "auto":
            assert in_pools(ip, pools)
            # The lowest free pool address.
            free = [h for h in hosts if in_pools(h, pools) and h not in held.values()]
            assert ip == free[0]
        held[port["id"]] = ip
    listed = op(store, ctx, ports.list_ports)["ports"]
    on_subnet = [f["ip_address"] for p in listed for f in p["fixed_ips"]
                 if f["subnet_id"] == sub["id"]]
    assert sorted(on_subnet) == sorted(held.values())


def test_concurrent_creates_never_share_an_address(env: tuple[Store, RequestContext]) -> None:
    store, ctx = env
    sub = new_subnet(store, ctx, "10.88.0.0/25")  # 125 pool addresses

    def create(_: int) -> str:
        port = op(store, ctx, ports.create_port, {"port": {"network_id": sub["network_id"]}})
        return str(port["port"]["fixed_ips"][0]["ip_address"])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(create, range(120)))
    assert len(set(got)) == 120
    assert all(in_pools(ip, sub["allocation_pools"]) for ip in got)
    assert sub["gateway_ip"] not in got


# ---- IPv6 auto-address subnets (SLAAC, dhcpv6-stateless) -------------------------------------


@pytest.mark.parametrize("cidr,mac,want", [
    ("2001:db8::/64", "fa:16:3e:00:00:01", "2001:db8::f816:3eff:fe00:1"),
    ("fd00:6e:7a::/64", "00:11:22:33:44:55", "fd00:6e:7a:0:211:22ff:fe33:4455"),
    # The universal/local bit flips both ways.
    ("fd00::/64", "02:00:00:00:00:00", "fd00::ff:fe00:0"),
])
def test_eui64_address(cidr: str, mac: str, want: str) -> None:
    assert ipam.eui64_address(cidr, mac) == want


@pytest.mark.parametrize("mode", ["slaac", "dhcpv6-stateless"])
def test_auto_address_subnet_gives_the_slaac_address(env: tuple[Store, RequestContext],
                                                     mode: str) -> None:
    store, ctx = env
    sub = new_subnet(store, ctx, "fd00:ea::/64", ipv6_address_mode=mode, ipv6_ra_mode=mode)
    port = op(store, ctx, ports.create_port, {"port": {"network_id": sub["network_id"]}})["port"]
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": ipam.eui64_address(
        "fd00:ea::/64", port["mac_address"])}]
    # Naming only the subnet gives the same address; an explicit address is kept.
    named = op(store, ctx, ports.create_port, {"port": {
        "network_id": sub["network_id"], "fixed_ips": [{"subnet_id": sub["id"]}]}})["port"]
    assert named["fixed_ips"][0]["ip_address"] == ipam.eui64_address("fd00:ea::/64",
                                                                     named["mac_address"])
    explicit = op(store, ctx, ports.create_port, {"port": {
        "network_id": sub["network_id"], "fixed_ips": [{"ip_address": "fd00:ea::77"}]}})["port"]
    assert explicit["fixed_ips"][0]["ip_address"] == "fd00:ea::77"
    # A second port with the same MAC would need the same address: refused, not doubled.
    with pytest.raises(Conflict):
        op(store, ctx, ports.create_port, {"port": {
            "network_id": sub["network_id"], "mac_address": port["mac_address"]}})


def test_stateful_subnet_allocates_from_the_pool(env: tuple[Store, RequestContext]) -> None:
    store, ctx = env
    sub = new_subnet(store, ctx, "fd00:eb::/64", ipv6_address_mode="dhcpv6-stateful",
                     ipv6_ra_mode="dhcpv6-stateful")
    port = op(store, ctx, ports.create_port, {"port": {"network_id": sub["network_id"]}})["port"]
    assert port["fixed_ips"][0]["ip_address"] == "fd00:eb::2"


@pytest.mark.parametrize("body,words", [
    ({"cidr": "fd00:ec::/80", "ipv6_address_mode": "slaac"}, "/64"),
    ({"cidr": "fd00:ec::/64", "ipv6_address_mode": "slaac",
      "ipv6_ra_mode": "dhcpv6-stateful"}, "differ"),
])
def test_invalid_ipv6_modes(env: tuple[Store, RequestContext], body: dict[str, Any],
                            words: str) -> None:
    store, ctx = env
    with pytest.raises(BadRequest, match=words):
        new_subnet(store, ctx, **body)


def test_a_retried_pick_spreads_over_a_window_of_the_lowest_free_addresses() -> None:
    pools = ipam.parse_pools([{"start": "10.0.0.2", "end": "10.0.0.254"}])
    used = {"10.0.0.2", "10.0.0.4"}
    # First try: the lowest, whatever the rng.
    assert ipam.pick_free(pools, used, "10.0.0.1", 1, random.Random(0)) == "10.0.0.3"
    window = {"10.0.0.3", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9",
              "10.0.0.10", "10.0.0.11"}
    picks = {ipam.pick_free(pools, used, "10.0.0.1", 8, random.Random(seed))
             for seed in range(200)}
    assert picks == window  # only the 8 lowest free, and each of them
    # A window wider than what is left: still only free addresses, None when full.
    tiny = ipam.parse_pools([{"start": "10.0.0.2", "end": "10.0.0.4"}])
    assert ipam.pick_free(tiny, {"10.0.0.2", "10.0.0.4"}, None, 64) == "10.0.0.3"
    assert ipam.pick_free(tiny, {"10.0.0.2", "10.0.0.3", "10.0.0.4"}, None, 64) is None
    assert [ipam.spread_for(n) for n in range(0, 11)] == [
        1, 8, 16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
