"""HA routers on the agent side, pure: keepalived.conf, the plan, the diff."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from openimds.l3.apply import RouterActual, RouterSettings, diff_router
from openimds.l3.ha import (
    ACTIVE,
    STANDBY,
    HaPlan,
    ha_name,
    managed_addresses,
    primary_vip,
    render_keepalived_conf,
    state_from_addresses,
)
from openimds.l3.model import router_from_neutron
from openimds.l3.plan import L3Options, desired_router_state
from openimds.linux.keepalived import keepalived_argv, runs_config
from openimds.linux.observe import Address
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import actions as act

RID = "11111111-2222-3333-4444-555555555555"
SETTINGS = RouterSettings(fabric="fab", state_path="/tmp/x",
                          proxy=ProxyDefaults(state_path="/tmp/x", socket_path="/tmp/s"))


def router_rows(ha: bool = True) -> tuple[dict, list[dict], list[dict]]:  # type: ignore[type-arg]
    router = {"id": RID, "name": "r", "project_id": "p", "ha": ha, "ha_vr_id": 7}
    subnets = [{"id": "s1", "cidr": "10.0.0.0/24"}, {"id": "sha", "cidr": "169.254.192.0/18"}]
    ports = [
        {"id": "qr-port-aaaaaaaa", "network_id": "n1", "mac_address": "FA:16:3E:00:00:01",
         "device_id": RID, "device_owner": "network:router_interface", "binding:host_id": "",
         "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.1"}]},
        {"id": "ha-port-on-h1xxx", "network_id": "nha", "mac_address": "fa:16:3e:00:00:02",
         "device_id": RID, "device_owner": "network:router_ha_interface",
         "binding:host_id": "h1", "fixed_ips": [{"subnet_id": "sha", "ip_address": "169.254.192.3"}]},
        {"id": "ha-port-on-h2xxx", "network_id": "nha", "mac_address": "fa:16:3e:00:00:03",
         "device_id": RID, "device_owner": "network:router_ha_interface",
         "binding:host_id": "h2", "fixed_ips": [{"subnet_id": "sha", "ip_address": "169.254.192.4"}]},
    ]
    return router, ports, subnets


def test_model_takes_this_hosts_ha_port() -> None:
    router, ports, subnets = router_rows()
    info = router_from_neutron(router, ports, subnets, host="h2")
    assert info.ha is not None and info.ha.vr_id == 7
    assert info.ha.port.port_id == "ha-port-on-h2xxx"
    assert info.ha.port.addresses == ("169.254.192.4/18",)
    assert [i.port_id for i in info.interfaces] == ["qr-port-aaaaaaaa"]  # ha- is no interface
    assert router_from_neutron(router_rows(ha=False)[0], ports, subnets, host="h2").ha is None


def test_plan_hands_the_qr_addresses_to_keepalived() -> None:
    router, ports, subnets = router_rows()
    opts = L3Options(ipv6_enabled=True, ha_advert_int=1)
    plan = desired_router_state(router_from_neutron(router, ports, subnets, host="h1"), opts)
    assert plan.ha is not None and plan.ha_port is not None
    assert plan.ha_port.name == ha_name("ha-port-on-h1xxx") == "ha-ha-port-on-"
    assert plan.ha.device == plan.ha_port.name and plan.ha.advert_int == 1
    assert set(plan.ha.vips) == {("10.0.0.1/24", "qr-qr-port-aaa"),
                                 ("fe80::a9fe:a9fe/128", "qr-qr-port-aaa")}
    assert ("net.ipv6.conf.default.addr_gen_mode", "1") in plan.sysctls
    # No MLD out of qr- (a backup's report would teach the bridges the wrong host).
    assert ("filter", "openimds-l3-OUTPUT",
            "-o qr-+ -p ipv6-icmp -m icmp6 --icmpv6-type 143 -j DROP") in plan.rules6
    legacy = desired_router_state(router_from_neutron(router_rows(ha=False)[0], ports, subnets),
                                  opts)
    assert not [r for r in legacy.rules6 if r[0] == "filter" and "OUTPUT" in r[1]]
    assert managed_addresses(plan.ha)[0] == (plan.ha.device, "169.254.0.7/24")


def test_keepalived_conf_matches_neutrons_shape() -> None:
    plan = HaPlan(router_id=RID, vr_id=7, device="ha-x",
                  vips=(("fe80::a9fe:a9fe/128", "qr-a"), ("10.0.0.1/24", "qr-a")),
                  advert_int=2, auth_type="PASS", auth_password="secret-longer-than-8")
    text = render_keepalived_conf(plan)
    for line in ("state BACKUP", "interface ha-x", "virtual_router_id 7", "priority 50",
                 "nopreempt", "advert_int 2", "auth_type PASS", "auth_pass secret-l",
                 "169.254.0.7/24 dev ha-x"):
        assert f"    {line}\n" in text or f"        {line}\n" in text, line
    excluded = text.split("virtual_ipaddress_excluded {\n")[1].split("    }")[0]
    assert excluded.split("\n")[:2] == ["        10.0.0.1/24 dev qr-a",
                                        "        fe80::a9fe:a9fe/128 dev qr-a"]
    assert "authentication" not in render_keepalived_conf(
        HaPlan(router_id=RID, vr_id=7, device="ha-x", vips=()))
    with pytest.raises(ValueError):
        render_keepalived_conf(HaPlan(router_id=RID, vr_id=256, device="ha-x", vips=()))


def test_keepalived_accepts_the_rendered_config_but_for_absent_devices() -> None:
    plan = HaPlan(router_id=RID, vr_id=3, device="ha-x",
                  vips=(("10.0.0.1/24", "qr-a"), ("fe80::a9fe:a9fe/128", "qr-a")),
                  auth_type="AH", auth_password="pw")
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "keepalived.conf"
        conf.write_text(render_keepalived_conf(plan))
        proc = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True,
                              text=True, timeout=30)
    # Outside the router's namespace its devices do not exist: that is all it may say
    # (the supervisor runs the same check inside the namespace, where they do).
    other = [line for line in proc.stderr.splitlines()
             if "doesn't exist" not in line and "Non-existent interface" not in line]
    assert other == [], proc.stderr


def test_state_is_active_only_with_the_primary_vip() -> None:
    plan = HaPlan(router_id=RID, vr_id=9, device="ha-x", vips=())
    assert primary_vip(9) == "169.254.0.9/24"
    assert state_from_addresses(plan, [("ha-x", "169.254.192.5/18")]) == STANDBY
    assert state_from_addresses(plan, [("ha-x", "169.254.0.9/24")]) == ACTIVE
    assert state_from_addresses(plan, [("qr-a", "169.254.0.9/24")]) == STANDBY


def test_keepalived_argv_and_ownership() -> None:
    argv = keepalived_argv("/usr/sbin/keepalived", "/s/ha_confs/r/keepalived.conf", "/p", "/v")
    assert argv[1:] == ["-P", "-G", "-D", "-f", "/s/ha_confs/r/keepalived.conf", "-p", "/p",
                        "-r", "/v"]
    assert runs_config(argv, "/s/ha_confs/r/keepalived.conf")
    assert not runs_config(argv, "/s/ha_confs/other/keepalived.conf")
    assert not runs_config(["haproxy", "-f", "/s/ha_confs/r/keepalived.conf"],
                           "/s/ha_confs/r/keepalived.conf")


def _actual(running: bool, addrs: list[Address]) -> RouterActual:
    return RouterActual(namespace_exists=True, addresses=tuple(addrs),
                        keepalived_configured=running, keepalived_running=running)


def test_diff_leaves_keepalived_addresses_alone_while_it_runs() -> None:
    router, ports, subnets = router_rows()
    plan = desired_router_state(router_from_neutron(router, ports, subnets, host="h1"),
                                L3Options(ipv6_enabled=False))
    actions = diff_router(RID, plan, _actual(True, []), SETTINGS)
    # No SyncAddresses (it would remove keepalived's VIPs); the ha- address only ensured.
    assert not [a for a in actions if isinstance(a, act.SyncAddresses)]
    assert act.EnsureAddresses(f"qrouter-{RID}", "ha-ha-port-on-", ("169.254.192.3/18",)) \
        in actions
    ka = [a for a in actions if isinstance(a, act.EnsureKeepalived)]
    assert len(ka) == 1 and ka[0].text == render_keepalived_conf(plan.ha)  # type: ignore[arg-type]


def test_diff_empties_qr_devices_before_starting_keepalived() -> None:
    router, ports, subnets = router_rows()
    plan = desired_router_state(router_from_neutron(router, ports, subnets, host="h1"),
                                L3Options(ipv6_enabled=False))
    actions = diff_router(RID, plan, _actual(False, []), SETTINGS)
    syncs = [a for a in actions if isinstance(a, act.SyncAddresses)]
    assert {(a.dev, a.cidrs) for a in syncs} == {("qr-qr-port-aaa", ()),
                                                 ("ha-ha-port-on-", ("169.254.192.3/18",))}
    assert actions.index(syncs[-1]) < actions.index(
        next(a for a in actions if isinstance(a, act.EnsureKeepalived)))


def test_diff_stops_keepalived_when_the_router_goes() -> None:
    actions = diff_router(RID, None, _actual(True, []), SETTINGS)
    assert actions[0] == act.StopKeepalived(RID)


def test_diff_stops_keepalived_before_syncing_a_router_no_longer_ha() -> None:
    router, ports, subnets = router_rows(ha=False)
    plan = desired_router_state(router_from_neutron(router, ports, subnets, host="h1"),
                                L3Options(ipv6_enabled=False))
    actions = diff_router(RID, plan, _actual(True, []), SETTINGS)
    sync = next(a for a in actions if isinstance(a, act.SyncAddresses))
    assert actions.index(act.StopKeepalived(RID)) < actions.index(sync)
    assert sync.cidrs == ("10.0.0.1/24",)
