"""`openimds network agent add|remove network --dhcp` against a real control-api."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.control.test_cli_agents import report
from tests.support.control_server import Cli, running_control_api


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with running_control_api(tmp_path_factory.mktemp("cli-dhcp-sched"),
                             "agent_down_time = 600\n") as c:
        c.admin("project", "create", "service", "--or-show")
        c.admin("user", "create", "neutron", "--project", "service", "--password", "pw",
                "--role", "service", "--or-show")
        yield c


def test_add_and_remove_network_on_a_dhcp_agent(cli: Cli) -> None:
    first = report(cli, "DHCP agent", "net-c")
    second = report(cli, "DHCP agent", "net-d")
    cli.run("network", "create", "sched")
    cli.run("subnet", "create", "sched", "--network", "sched", "--subnet-range", "10.20.0.0/24")
    net = cli.json("network", "show", "sched")

    def hosts() -> list[str]:
        ports = cli.json("port", "list", "--network", net["id"], "--device-owner",
                         "network:dhcp")
        return sorted(p["binding:host_id"] for p in ports)

    served = hosts()
    assert len(served) == 1 and served[0] in ("net-c", "net-d")
    other = second if served == ["net-c"] else first
    cli.run("network", "agent", "add", "network", "--dhcp", str(other["id"]), "sched")
    assert hosts() == ["net-c", "net-d"]
    cli.run("network", "agent", "remove", "network", "--dhcp", str(other["id"]), "sched")
    assert hosts() == served
