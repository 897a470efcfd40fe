"""AgentSettings from the seed's metadata_agent.ini and from explicit options."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from openimds.agent.settings import deduce_socket_mode, from_conf, upstream_base_urls
from openimds.config import ConfigError, load_config

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seeds" / "seed000" / "metadata_agent.ini"


def test_seed_file_loads() -> None:
    s = from_conf(load_config("metadata-agent", [str(SEED)]))
    assert s.upstream_urls == ("http://controller:8775",)  # nova_metadata_ip alias
    assert s.shared_secret == "SECRETE_KEY"
    assert (s.auth_url, s.username, s.password, s.project_name) == (
        "http://controller:5000/v2.0", "neutron", "admin_pass", "service")
    assert s.socket_path == "/var/lib/openimds/metadata_proxy"
    assert s.backlog == 4096
    # No metadata_proxy_user: a root agent's proxies drop to a dedicated user with the agent's
    # group, so the socket is group-writable; an unprivileged agent's proxies run as itself.
    assert s.socket_mode == (0o664 if os.geteuid() == 0 else 0o644)
    assert s.upstream_timeout < 32  # answers before haproxy's `timeout server`
    assert "admin_pass" not in repr(s)


def test_explicit_options(tmp_path: Path) -> None:
    ini = tmp_path / "metadata_agent.ini"
    ini.write_text("[DEFAULT]\nnova_metadata_host = 2001:db8::1\nnova_metadata_port = 9000\n"
                   "nova_metadata_protocol = https\nmetadata_workers = 0\n"
                   "metadata_proxy_socket_mode = all\nmetadata_proxy_user = 0\n"
                   "nova_client_cert = /c.pem\nnova_client_priv_key = /k.pem\n"
                   "auth_ca_cert = /ca.pem\n")
    s = from_conf(load_config("metadata-agent", [str(ini)]))
    assert s.upstream_urls == ("https://[2001:db8::1]:9000",)
    assert s.workers == 1
    assert s.socket_mode == 0o666
    assert s.socket_uid == 0
    assert (s.ca_cert, s.client_cert, s.client_key) == ("/ca.pem", "/c.pem", "/k.pem")


def test_failover_urls_replace_host_port() -> None:
    assert upstream_base_urls("http", "h", 1, ["http://a:8775/", "https://b:8775"]) == (
        "http://a:8775", "https://b:8775")


def test_unknown_user_is_an_error(tmp_path: Path) -> None:
    ini = tmp_path / "metadata_agent.ini"
    ini.write_text("[DEFAULT]\nmetadata_proxy_user = no-such-user-xyz\n")
    with pytest.raises(ValueError, match="no-such-user-xyz"):
        from_conf(load_config("metadata-agent", [str(ini)]))


def test_deduce_mode() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert deduce_socket_mode("deduce", "", "") == 0o644
    assert deduce_socket_mode("deduce", me, "") == 0o644
    assert deduce_socket_mode("deduce", "root", "x") == 0o644
    assert deduce_socket_mode("deduce", "someone-else", "") == 0o664
    assert deduce_socket_mode("deduce", "someone-else", "other-group-xyz") == 0o666
    assert deduce_socket_mode("group", "", "") == 0o664


def test_nova_metadata_host_lists_replicas(tmp_path: Path) -> None:
    ini = tmp_path / "metadata_agent.ini"
    ini.write_text("[DEFAULT]\nnova_metadata_host = md-1, 2001:db8::2,10.0.0.3\n"
                   "nova_metadata_port = 8775\n")
    conf = load_config("metadata-agent", [str(ini)])
    assert conf.nova_metadata_host == "md-1,2001:db8::2,10.0.0.3"
    assert from_conf(conf).upstream_urls == (
        "http://md-1:8775", "http://[2001:db8::2]:8775", "http://10.0.0.3:8775")


@pytest.mark.parametrize("value", ["md-1,,md-2", "md-1,bad host"])
def test_nova_metadata_host_list_rejects_bad_entries(tmp_path: Path, value: str) -> None:
    ini = tmp_path / "metadata_agent.ini"
    ini.write_text(f"[DEFAULT]\nnova_metadata_host = {value}\n")
    with pytest.raises(ConfigError, match=r"nova_metadata_host: invalid value"):
        load_config("metadata-agent", [str(ini)])
