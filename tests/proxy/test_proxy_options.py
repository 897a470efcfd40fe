"""The proxy defaults the DHCP, L3 and L2 agents share come from one ConfigOpts the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from openimds.config import load_config
from openimds.proxy.haproxy import Connections, Timeouts
from openimds.proxy.options import (
    default_proxy_user,
    proxy_defaults_from_conf,
    proxy_log_stream,
    proxy_log_target,
)


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
        got = proxy_defaults_from_conf(load_config(service, [str(ini)]))
        assert got.socket_path == "/run/openimds/metadata_proxy"
        assert (got.user, got.group) == ("nobody", None)
        assert got.timeouts == Timeouts(server=40)
        assert got.rate_limit is not None and got.rate_limit.base_limit == 7


def test_connection_settings_from_metadata_haproxy(tmp_path: Path) -> None:
    ini = tmp_path / "dhcp_agent.ini"
    ini.write_text("[DEFAULT]\n" f"state_path = {tmp_path}\n")
    got = proxy_defaults_from_conf(load_config("dhcp-agent", [str(ini)]))
    # Defaults sized for a cloud-init boot: a short header timeout, a per-source share.
    assert got.timeouts.http_request == 5
    assert got.connections == Connections(
        maxconn=4096, per_source=32, agent_maxconn=32, agent_mode="reuse"
    )
    ini.write_text(
        "[DEFAULT]\n"
        f"state_path = {tmp_path}\n"
        "[metadata_haproxy]\n"
        "max_connections_per_source = 0\n"
        "agent_connection_mode = close\n"
    )
    got = proxy_defaults_from_conf(load_config("l3-agent", [str(ini)]))
    assert got.connections == Connections(
        maxconn=4096, per_source=0, agent_maxconn=4, agent_mode="close"
    )


@pytest.mark.parametrize(
    ("configured", "euid", "users", "want"),
    [
        ("neutron", 0, set(), "neutron"),  # configured: always that
        ("998", 1000, set(), "998"),
        ("", 1000, {"haproxy"}, ""),  # unprivileged agent: the proxy runs as the agent
        ("", 0, {"haproxy", "nobody"}, "haproxy"),  # root agent: never root proxies
        ("", 0, {"nobody"}, "nobody"),
    ],
)
def test_default_proxy_user(configured: str, euid: int, users: set[str], want: str) -> None:
    assert default_proxy_user(configured, euid=euid, user_exists=users.__contains__) == want


def test_root_without_any_dedicated_user_refuses() -> None:
    with pytest.raises(ValueError, match="metadata_proxy_user"):
        default_proxy_user("", euid=0, user_exists=lambda name: False)


@pytest.mark.parametrize(
    ("dev_log", "service", "want"),
    [
        (True, "dhcp-agent", "/dev/log"),
        (False, "dhcp-agent", "/var/lib/openimds/ns-metadata-proxy/dhcp-agent-log.sock"),
        (False, "l3-agent", "/var/lib/openimds/ns-metadata-proxy/l3-agent-log.sock"),
        (False, None, None),  # nobody to receive: the standalone ns-metadata-proxy
    ],
)
def test_proxy_log_target_is_never_nothing_for_an_agent(
    dev_log: bool, service: str | None, want: str | None
) -> None:
    assert proxy_log_target("/var/lib/openimds", service, dev_log=dev_log) == want
    assert proxy_log_target("/" + "x" * 100, "dhcp-agent", dev_log=False) is None


def test_proxy_log_stream_sits_beside_the_agents_sink_only() -> None:
    sink = "/var/lib/openimds/ns-metadata-proxy/dhcp-agent-log.sock"
    assert proxy_log_stream(sink) == (
        "/var/lib/openimds/ns-metadata-proxy/dhcp-agent-log.stream.sock")
    assert proxy_log_stream("/dev/log") is None  # the host's syslog takes datagrams
    assert proxy_log_stream(None) is None
    # A datagram path that fits but whose stream path would not: datagrams then.
    assert proxy_log_stream("/" + "x" * 95 + ".sock") is None


def _conns(tmp_path: Path, service: str, text: str) -> Connections:
    from openimds.proxy.options import connections_from_conf

    ini = tmp_path / f"{service}.ini"
    ini.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n" + text)
    return connections_from_conf(load_config(service, [str(ini)]))


def test_map_mode_from_the_same_options_as_the_metadata_agent(tmp_path: Path) -> None:
    from openimds.proxy.haproxy import InstanceLimit

    for service in ("dhcp-agent", "l3-agent", "l2-agent"):
        assert _conns(tmp_path, service, "").identity == "agent"
        got = _conns(tmp_path, service, "metadata_proxy_identity = haproxy_map\n"
                     "nova_metadata_host = 10.0.0.1,10.0.0.2\nnova_metadata_port = 8776\n")
        assert got.identity == "haproxy_map"
        assert got.api_servers == (("10.0.0.1", 8776), ("10.0.0.2", 8776))
        # The agent's per-instance limit (on by default) moves into the proxies.
        assert got.instance_limit == InstanceLimit(rate=5.0, burst=200)
    urls = _conns(tmp_path, "dhcp-agent", "metadata_proxy_identity = haproxy_map\n"
                  "nova_metadata_urls = http://[fd00::1]:8775,http://api.example\n"
                  "[metadata_rate_limiting]\ninstance_rate_limit_enabled = false\n")
    assert urls.api_servers == (("fd00::1", 8775), ("api.example", 80))
    assert urls.instance_limit is None


def test_map_mode_refuses_tls_to_the_api(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        _conns(tmp_path, "dhcp-agent", "metadata_proxy_identity = haproxy_map\n"
               "nova_metadata_protocol = https\n")
    with pytest.raises(ValueError, match="http://host"):
        _conns(tmp_path, "l3-agent", "metadata_proxy_identity = haproxy_map\n"
               "nova_metadata_urls = https://api.example:8775\n")
