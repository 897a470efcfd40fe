"""load_config / inspect_config: seed files, aliases, validation, unknown options."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from oslo_config import cfg

from openimds.config import SERVICES, ConfigError, database_url, inspect_config, load_config

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
S0 = SEEDS / "seed000"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_services_names() -> None:
    assert set(SERVICES) == {"control-api", "metadata-api", "metadata-agent", "dhcp-agent",
                             "l3-agent", "l2-agent", "ns-metadata-proxy", "all-in-one"}


@pytest.mark.parametrize("service", SERVICES)
def test_defaults_load_fresh_confopts(service: str) -> None:
    conf = load_config(service, [])
    assert isinstance(conf, cfg.ConfigOpts)
    assert conf is not cfg.CONF
    assert conf.state_path == "/var/lib/openimds"
    # fresh each time: changing one does not touch the next
    conf.set_override("state_path", "/elsewhere")
    assert load_config(service, []).state_path == "/var/lib/openimds"


def test_documented_defaults() -> None:
    conf = load_config("all-in-one", [])
    assert (conf.bind_host, conf.bind_port, conf.token_expiration) == ("127.0.0.1", 9696, 3600)
    assert (conf.metadata_listen, conf.metadata_listen_port) == ("0.0.0.0", 8775)
    assert (conf.metrics_listen, conf.metrics_listen_port) == ("127.0.0.1", 9779)
    assert conf.neutron.service_metadata_proxy is True  # openimds default, unlike nova
    assert conf.api.dhcp_domain == "novalocal"
    assert conf.api.vendordata_providers == ["StaticJSON"]
    assert conf.api.trusted_proxies == []
    assert conf.dns_domain == "openstacklocal"
    assert conf.dhcp_confs == "/var/lib/openimds/dhcp"
    assert conf.metadata_proxy_socket == "/var/lib/openimds/metadata_proxy"
    assert conf.metadata_port == 9697
    assert conf.nova_metadata_host == "127.0.0.1"
    assert conf.metadata_haproxy.timeout_client == 32
    assert database_url(conf) == "sqlite:////var/lib/openimds/openimds.sqlite"


def test_state_path_substitution_and_database_url(tmp_path: Path) -> None:
    f = write(tmp_path, "a.conf", "[DEFAULT]\nstate_path = /srv/imds\n")
    conf = load_config("dhcp-agent", [f])
    assert conf.dhcp_confs == "/srv/imds/dhcp"
    assert database_url(conf) == "sqlite:////srv/imds/openimds.sqlite"
    g = write(tmp_path, "b.conf", "[database]\nconnection = postgresql+psycopg://u:p@h/db\n")
    assert database_url(load_config("control-api", [g])) == "postgresql+psycopg://u:p@h/db"


# --- the seed snippets, byte-for-byte copies -------------------------------------------

def test_seed_nova_conf_without_section_header() -> None:
    loaded = inspect_config("metadata-api", [str(S0 / "nova.conf")])
    conf = loaded.conf
    assert conf.enabled_apis == ["osapi_compute", "metadata"]
    assert conf.neutron.service_metadata_proxy is True
    assert conf.neutron.metadata_proxy_shared_secret == "SECRET_KEY"
    kinds = {(f.kind, f.option) for f in loaded.findings}
    assert ("no-section", "") in kinds
    assert ("deprecated", "service_neutron_metadata_proxy") in kinds
    assert ("deprecated", "neutron_metadata_proxy_shared_secret") in kinds


def test_seed_metadata_agent_ini() -> None:
    loaded = inspect_config("metadata-agent", [str(S0 / "metadata_agent.ini")])
    conf = loaded.conf
    assert conf.auth_url == "http://controller:5000/v2.0"
    assert conf.auth_region == "RegionOne"
    assert conf.admin_tenant_name == "service"
    assert conf.admin_user == "neutron"
    # the seed has a non-breaking space after "=": it is whitespace, not part of the password
    assert conf.admin_password == "admin_pass"
    assert conf.nova_metadata_host == "controller"
    assert conf.metadata_proxy_shared_secret == "SECRETE_KEY"
    # only the renamed option warns; the auth options are current in openimds
    assert [(f.kind, f.option) for f in loaded.findings] == [("deprecated", "nova_metadata_ip")]


@pytest.mark.parametrize(
    ("service", "path", "expected"),
    [
        ("dhcp-agent", "seed000/dhcp-variant/dhcp_agent.in",
         {"enable_metadata_network": True, "enable_isolated_metadata": True}),
        ("l3-agent", "seed000/dhcp-variant/l3_agent.ini", {"enable_metadata_proxy": False}),
        ("dhcp-agent", "seed000/l3-variant/dhcp_agent.ini",
         {"enable_metadata_network": True, "enable_isolated_metadata": False}),
        ("l3-agent", "seed000/l3-variant/l3_agent.ini",
         {"enable_metadata_proxy": True, "metadata_port": 9697,
          "metadata_proxy_socket": "/var/lib/neutron/metadata_proxy"}),
        ("dhcp-agent", "seed002/dhcp_agent.ini", {"enable_isolated_metadata": True}),
    ],
)
def test_seed_agent_files(service: str, path: str, expected: dict[str, object]) -> None:
    loaded = inspect_config(service, [str(SEEDS / path)])
    for name, value in expected.items():
        assert getattr(loaded.conf, name) == value, name
    assert not [f for f in loaded.findings if f.kind in ("unknown", "unused")]


def test_all_seed_files_together_all_in_one() -> None:
    files = [str(S0 / "nova.conf"), str(S0 / "metadata_agent.ini"),
             str(S0 / "l3-variant" / "dhcp_agent.ini"), str(S0 / "l3-variant" / "l3_agent.ini")]
    conf = load_config("all-in-one", files)
    assert conf.neutron.metadata_proxy_shared_secret == "SECRET_KEY"
    assert conf.metadata_proxy_shared_secret == "SECRETE_KEY"
    assert conf.metadata_port == 9697


def test_deprecation_warnings_are_logged_with_file(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load_config("metadata-agent", [str(S0 / "metadata_agent.ini")])
    ours = [r.getMessage() for r in caplog.records if r.name == "openimds.config"]
    assert any("metadata_agent.ini" in m and "nova_metadata_ip" in m
               and "nova_metadata_host" in m for m in ours)
    # oslo's own file-less line for the same thing is replaced by ours
    assert not [r for r in caplog.records if r.name == "oslo_config.cfg"
                and "is deprecated. Use option" in str(r.msg)]


# --- aliases -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "section", "name", "value"),
    [
        ("[DEFAULT]\nservice_quantum_metadata_proxy = false\n", "neutron",
         "service_metadata_proxy", False),
        ("[DEFAULT]\nquantum_metadata_proxy_shared_secret = q\n", "neutron",
         "metadata_proxy_shared_secret", "q"),
        ("[DEFAULT]\nmetadata_cache_expiration = 7\n", "api", "metadata_cache_expiration", 7),
        ("[DEFAULT]\nvendordata_providers = StaticJSON,DynamicJSON\n", "api",
         "vendordata_providers", ["StaticJSON", "DynamicJSON"]),
    ],
)
def test_nova_aliases(tmp_path: Path, text: str, section: str, name: str,
                      value: object) -> None:
    loaded = inspect_config("metadata-api", [write(tmp_path, "x.conf", text)])
    assert getattr(getattr(loaded.conf, section), name) == value
    assert [f.kind for f in loaded.findings] == ["deprecated"]


def test_dhcp_domain_alias(tmp_path: Path) -> None:
    loaded = inspect_config("dhcp-agent",
                            [write(tmp_path, "d.ini", "[DEFAULT]\ndhcp_domain = example.org\n")])
    assert loaded.conf.dns_domain == "example.org"
    assert [f.kind for f in loaded.findings] == ["deprecated"]


def test_current_name_wins_over_alias_in_same_file(tmp_path: Path) -> None:
    f = write(tmp_path, "m.ini", "[DEFAULT]\nnova_metadata_ip = old\nnova_metadata_host = new\n")
    loaded = inspect_config("metadata-agent", [f])
    assert loaded.conf.nova_metadata_host == "new"
    assert loaded.origins[("DEFAULT", "nova_metadata_host")].key == "nova_metadata_host"


def test_later_file_overrides_and_config_dir(tmp_path: Path) -> None:
    a = write(tmp_path, "a.conf", "[DEFAULT]\nbind_port = 1000\n")
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "10-port.conf").write_text("[DEFAULT]\nbind_port = 2000\n")
    (d / "ignored.txt").write_text("[DEFAULT]\nbind_port = 3000\n")
    loaded = inspect_config("control-api", [a], [str(d)])
    assert loaded.conf.bind_port == 2000
    assert loaded.origins[("DEFAULT", "bind_port")].file == str(d / "10-port.conf")


# --- invalid values ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("service", "text", "section", "option"),
    [
        ("metadata-api", "[DEFAULT]\nmetadata_listen_port = 99999\n", "DEFAULT",
         "metadata_listen_port"),
        ("control-api", "[DEFAULT]\nbind_port = 99999\n", "DEFAULT", "bind_port"),
        ("metadata-api", "[neutron]\nservice_metadata_proxy = maybe\n", "neutron",
         "service_metadata_proxy"),
        ("metadata-api", "service_neutron_metadata_proxy = maybe\n", "DEFAULT",
         "service_neutron_metadata_proxy"),
        ("dhcp-agent", "[DEFAULT]\nenable_isolated_metadata = maybe\n", "DEFAULT",
         "enable_isolated_metadata"),
        ("metadata-agent", "[DEFAULT]\nmetadata_proxy_socket_mode = world\n", "DEFAULT",
         "metadata_proxy_socket_mode"),
        ("metadata-api", "[api]\nvendordata_dynamic_connect_timeout = 2\n", "api",
         "vendordata_dynamic_connect_timeout"),
        ("metadata-api", "[api]\ntrusted_proxies = 10.0.0.1,not-an-ip\n", "api",
         "trusted_proxies"),
    ],
)
def test_invalid_value_names_file_section_option(tmp_path: Path, service: str, text: str,
                                                 section: str, option: str) -> None:
    f = write(tmp_path, "bad.conf", text)
    with pytest.raises(ConfigError) as info:
        load_config(service, [f])
    err = info.value
    assert (err.file, err.section, err.option) == (f, section, option)
    line = str(err)
    assert "\n" not in line
    assert line.startswith(f"{f}: [{section}] {option}: ")


def test_invalid_interpolated_value_found_after_substitution(tmp_path: Path) -> None:
    f = write(tmp_path, "i.ini", "[DEFAULT]\nmy_port = 70000\nmetadata_port = $my_port\n")
    with pytest.raises(ConfigError) as info:
        load_config("l3-agent", [f])
    assert (info.value.file, info.value.option) == (f, "metadata_port")


def test_missing_file_and_bad_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("control-api", [str(tmp_path / "nope.conf")])
    assert info.value.file.endswith("nope.conf")
    bad = write(tmp_path, "syntax.conf", "[DEFAULT\nx = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config("control-api", [bad])
    assert info.value.file == bad and "line 1" in str(info.value)


def test_unknown_service() -> None:
    with pytest.raises(ValueError, match="known:"):
        load_config("nova-compute", [])


# --- unknown options -----------------------------------------------------------------

def test_unknown_options_and_sections(tmp_path: Path) -> None:
    f = write(tmp_path, "m.ini",
              "[DEFAULT]\nnova_metdata_host = typo\nenable_isolated_metadata = true\n"
              "[keystone_authtoken]\nauth_type = password\nusername = x\n")
    loaded = inspect_config("metadata-agent", [f])
    by_option = {(f.kind, f.section, f.option): f for f in loaded.findings}
    assert ("unknown", "DEFAULT", "nova_metdata_host") in by_option
    unused = by_option[("unused", "DEFAULT", "enable_isolated_metadata")]
    assert "dhcp-agent" in unused.message
    assert ("unknown-section", "keystone_authtoken", "") in by_option
    assert loaded.conf.nova_metadata_host == "127.0.0.1"  # the typo changed nothing
