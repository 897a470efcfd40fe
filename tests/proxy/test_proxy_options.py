"""The proxy fields the DHCP and L3 agents share come from one ConfigOpts the same way."""

from __future__ import annotations

from pathlib import Path

from openimds.config import load_config
from openimds.proxy.haproxy import Connections, Timeouts
from openimds.proxy.options import proxy_settings_from_conf


def test_proxy_settings_from_an_agent_ini(tmp_path: Path) -> None:
    ini = tmp_path / "l3_agent.ini"
    ini.write_text(
        "[DEFAULT]\n"
        f"state_path = {tmp_path}\n"
        "metadata_proxy_socket = /run/openimds/metadata_proxy\n"
        "metadata_proxy_user = nobody\n"
        "[metadata_haproxy]\n"
        "timeout_server = 40\n"
        "[metadata_rate_limiting]\n"
        "rate_limit_enabled = true\n"
        "base_query_rate_limit = 7\n"
    )
    for service in ("dhcp-agent", "l3-agent"):
        got = proxy_settings_from_conf(load_config(service, [str(ini)]))
        assert got["metadata_proxy_socket"] == "/run/openimds/metadata_proxy"
        assert (got["proxy_user"], got["proxy_group"]) == ("nobody", None)
        assert got["timeouts"] == Timeouts(server=40)
        assert got["rate_limit"] is not None and got["rate_limit"].base_limit == 7


def test_connection_settings_from_metadata_haproxy(tmp_path: Path) -> None:
    ini = tmp_path / "dhcp_agent.ini"
    ini.write_text("[DEFAULT]\n" f"state_path = {tmp_path}\n")
    got = proxy_settings_from_conf(load_config("dhcp-agent", [str(ini)]))
    # Defaults sized for a cloud-init boot: a short header timeout, a per-source share.
    assert got["timeouts"].http_request == 5
    assert got["connections"] == Connections(
        maxconn=4096, per_source=32, agent_maxconn=32, agent_mode="reuse"
    )
    ini.write_text(
        "[DEFAULT]\n"
        f"state_path = {tmp_path}\n"
        "[metadata_haproxy]\n"
        "max_connections_per_source = 0\n"
        "agent_connection_mode = close\n"
    )
    got = proxy_settings_from_conf(load_config("l3-agent", [str(ini)]))
    assert got["connections"] == Connections(
        maxconn=4096, per_source=0, agent_maxconn=4, agent_mode="close"
    )
