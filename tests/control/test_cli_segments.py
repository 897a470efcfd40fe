"""`openimds network create` / `net-create` provider flags against a real control-api with
[ml2] options from its config file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control_server import Cli, running_control_api

ML2 = """
[ml2]
tenant_network_types = vxlan,vlan
[ml2_type_vxlan]
vni_ranges = 2000:2001
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199
"""


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with running_control_api(tmp_path_factory.mktemp("cli-segments"), ML2) as c:
        yield c


def segment(net: dict[str, object]) -> tuple[object, ...]:
    return (net["provider:network_type"], net["provider:physical_network"],
            net["provider:segmentation_id"])


def test_both_flag_spellings(cli: Cli) -> None:
    a = cli.json("network", "create", "a", "--provider-network-type", "vlan",
                 "--provider-physical-network", "physnet1", "--provider-segment", "120")
    assert segment(a) == ("vlan", "physnet1", 120)
    b = cli.json("net-create", "b", "--provider:network_type", "vxlan",
                 "--provider:segmentation_id", "7000")
    assert segment(b) == ("vxlan", None, 7000)
    tenant = cli.json("network", "create", "c")
    assert segment(tenant) == ("vxlan", None, 2000)


def test_errors_print_neutrons_message(cli: Cli) -> None:
    cli.run("network", "create", "d", "--provider-network-type", "vxlan",
            "--provider-segment", "7100")
    again = cli.run("network", "create", "e", "--provider-network-type", "vxlan",
                    "--provider-segment", "7100", check=False)
    assert again.returncode == 1 and "tunnel ID 7100 is in use" in again.stderr
    bad = cli.run("network", "create", "f", "--provider-network-type", "vlan",
                  "--provider-physical-network", "physnet1", "--provider-segment", "5000",
                  check=False)
    assert bad.returncode == 1 and "5000 out of range (1 through 4094)" in bad.stderr


def test_malformed_range_stops_the_server_with_the_option_named(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n[ml2_type_vxlan]\nvni_ranges = 9:1\n")
    proc = subprocess.run([sys.executable, "-m", "openimds", "control-api", "--config-file",
                           str(conf)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "[ml2_type_vxlan] vni_ranges: '9:1' must be <min>:<max>" in proc.stderr
