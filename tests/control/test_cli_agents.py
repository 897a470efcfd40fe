"""`openimds network agent list|show|set|delete` and `openimds agent-list` against a real
control-api (agents registered by a service user's state reports)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openimds.control.client import SyncControlClient
from tests.fabric.lab import wait_for
from tests.support.control_server import Cli, running_control_api

# Long enough that a CLI subprocess started right after a report still finds the agent alive
# on a busy machine; the dead case below polls until it has passed.
DOWN_TIME = 10


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with running_control_api(tmp_path_factory.mktemp("cli-agents"),
                             f"agent_down_time = {DOWN_TIME}\n") as c:
        c.admin("project", "create", "service", "--or-show")
        c.admin("user", "create", "neutron", "--project", "service", "--password", "pw",
                "--role", "service", "--or-show")
        yield c


def report(cli: Cli, agent_type: str, host: str) -> dict[str, object]:
    with SyncControlClient(cli.url + "/v3", "neutron", "pw", "service") as api:
        return api.create("agents", {"agent_type": agent_type, "host": host,
                                     "configurations": {"tunneling_ip": "192.0.2.1"}})


def test_list_show_set_and_legacy_list(cli: Cli) -> None:
    dhcp = report(cli, "DHCP agent", "net-a")
    report(cli, "Linux bridge agent", "cmp-a")
    table = cli.run("network", "agent", "list").stdout
    assert "DHCP agent" in table and "Linux bridge agent" in table and ":-)" in table
    assert "| Alive" in table and "neutron-linuxbridge-agent" in table
    only = cli.json("network", "agent", "list", "--agent-type", "linux-bridge")
    assert [a["host"] for a in only] == ["cmp-a"]
    assert cli.json("network", "agent", "list", "--host", "net-a")[0]["id"] == dhcp["id"]
    shown = cli.json("network", "agent", "show", str(dhcp["id"]))
    assert shown["configurations"] == {"tunneling_ip": "192.0.2.1"}
    cli.run("network", "agent", "set", str(dhcp["id"]), "--disable")
    assert cli.json("network", "agent", "show", str(dhcp["id"]))["admin_state_up"] is False
    legacy = cli.run("agent-list").stdout
    assert "DHCP agent" in legacy and "DOWN" in legacy
    updated = cli.json("agent-update", str(dhcp["id"]), "--admin-state-up")
    assert updated["admin_state_up"] is True


def test_delete_refuses_alive_then_removes_dead(cli: Cli) -> None:
    agent = report(cli, "L3 agent", "net-b")
    alive = cli.run("network", "agent", "delete", str(agent["id"]), check=False)
    assert alive.returncode == 1 and "is alive" in alive.stderr
    # Until agent_down_time has passed without a report.
    wait_for(lambda: not cli.json("network", "agent", "show", str(agent["id"]))["alive"],
             timeout=6 * DOWN_TIME, interval=0.2)
    assert "XXX" in cli.run("network", "agent", "list", "--host", "net-b").stdout
    cli.run("network", "agent", "delete", str(agent["id"]))
    assert cli.json("network", "agent", "list", "--host", "net-b") == []

