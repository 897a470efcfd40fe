"""End to end with `[DEFAULT] metadata_proxy_identity = haproxy_map` on a real all-in-one:
haproxy identifies guests from the maps the metadata agent keeps and forwards straight to the
metadata API. The behaviour tests of test_end_to_end run unchanged on this path (overlapping
tenants on the DHCP and router paths, a real cloud-init reader, churn of a reused address),
plus what is particular to it: the agent is off the request path, a port change updates the
running map without a reload, and an address the inventory does not hold gets 404."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cloud import Cloud
from tests.e2e.test_end_to_end import (  # noqa: F401 - collected here, on this module's cloud
    test_churn_reused_ip_answers_for_the_new_instance,
    test_cloud_init_openstack_reader_inside_the_guest,
    test_overlapping_tenants_each_get_their_own_data,
    test_seed2_isolated_network_guest_gets_its_metadata_over_dhcp_path,
)
from tests.fabric.lab import sh, wait_for

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    from tests.conftest import IN_CI

    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true but not root: end-to-end tests must run in CI")
        pytest.skip("needs root (network namespaces)")
    node = Cloud()
    with open(node.extra_conf, "a") as fh:
        fh.write("metadata_proxy_identity = haproxy_map\n")
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


def _haproxy_pid(cloud: Cloud, network_id: str) -> int | None:
    conf = f"{cloud.state}/ns-metadata-proxy/{network_id}.conf".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"haproxy") and conf in argv:
                return int(entry.name)
    return None


def test_port_change_reaches_the_running_map_and_unknown_sources_get_404(cloud: Cloud) -> None:
    tag = str(os.getpid())[-4:]
    net = cloud.cli("net-create", f"map-{tag}")
    cloud.cli("subnet-create", "--no-gateway", "--name", f"map-sub-{tag}", f"map-{tag}",
              "192.168.70.0/24")
    first = cloud.cli("server", "create", f"map-a-{tag}", "--network", f"map-{tag}",
                      "--fixed-ip", "192.168.70.50")
    guest = cloud.boot_guest(cloud.server_port(first["id"])["id"])
    cloud.dhcp(guest)
    assert cloud.metadata(guest)["uuid"] == first["id"]
    conf = (cloud.state / "ns-metadata-proxy" / f"{net['id']}.conf").read_text()
    assert "# identity-map: network" in conf and "map_ip(" in conf
    pid = _haproxy_pid(cloud, net["id"])
    assert pid is not None

    # The instance goes, another takes its address: the same haproxy answers for the new one.
    cloud.cli_raw("server", "delete", first["id"])
    second = cloud.cli("server", "create", f"map-b-{tag}", "--network", f"map-{tag}",
                       "--fixed-ip", "192.168.70.50")

    def answers_second() -> bool:
        status, body = cloud.fetch(guest, "/openstack/latest/meta_data.json")
        return status == 200 and json.loads(body)["uuid"] == second["id"]

    wait_for(answers_second, timeout=15, interval=0.2)
    assert _haproxy_pid(cloud, net["id"]) == pid  # no reload, no restart

    # A source address no port holds: 404, as the agent answers.
    route = sh("ip", "-o", "route", "get", "169.254.169.254", netns=guest).split()
    via = route[route.index("via") + 1]
    sh("ip", "addr", "add", "192.168.70.99/24", "dev", "eth0", netns=guest)
    sh("ip", "route", "replace", "169.254.169.254", "via", via, "dev", "eth0", "src",
       "192.168.70.99", netns=guest)
    status, body = cloud.fetch(guest, "/openstack/latest/meta_data.json")
    assert status == 404, body
    assert b"Instance was not found" in body
