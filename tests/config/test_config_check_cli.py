"""`openimds config check`, run as operators run it: `python -m openimds` in a subprocess."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from openimds.cli.config_cmd import run_check
from openimds.config.check import plan_checks

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
S0 = SEEDS / "seed000"


def openimds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openimds", *args],
                          capture_output=True, text=True, timeout=60)


def files_args(*paths: Path | str) -> list[str]:
    out: list[str] = []
    for p in paths:
        out += ["--config-file", str(p)]
    return out


def test_seed_secret_mismatch_is_named_plainly() -> None:
    nova, agent = S0 / "nova.conf", S0 / "metadata_agent.ini"
    res = openimds("config", "check", *files_args(nova, agent))
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "secrets differ" in ln]
    assert len(lines) == 1
    line = lines[0]
    assert f"{nova} [DEFAULT] neutron_metadata_proxy_shared_secret" in line
    assert "[neutron] metadata_proxy_shared_secret" in line
    assert f"{agent} [DEFAULT] metadata_proxy_shared_secret" in line
    assert "403" in line
    for secret in ("SECRET_KEY", "SECRETE_KEY", "admin_pass"):
        assert not re.search(rf"\b{secret}\b", res.stdout + res.stderr), secret
    # both services were shown, each with its own options
    assert "# metadata-api (" in res.stdout and "# metadata-agent (" in res.stdout
    assert "metadata_proxy_shared_secret = ****" in res.stdout
    assert "admin_password = ****" in res.stdout
    assert "nova_metadata_host = controller" in res.stdout
    # deprecated seed spellings are warned about with file, section and option
    assert (f"warning: {agent}: [DEFAULT] nova_metadata_ip: deprecated name; use [DEFAULT] "
            "nova_metadata_host") in res.stderr


def test_matching_secrets_exit_zero(tmp_path: Path) -> None:
    nova = tmp_path / "nova.conf"
    nova.write_text("[neutron]\nmetadata_proxy_shared_secret = s3cr3t-value\n")
    agent = tmp_path / "metadata_agent.ini"
    agent.write_text("[DEFAULT]\nmetadata_proxy_shared_secret = s3cr3t-value\n")
    res = openimds("config", "check", *files_args(nova, agent))
    assert res.returncode == 0, res.stderr
    assert "differ" not in res.stderr
    assert "s3cr3t-value" not in res.stdout + res.stderr


def test_one_side_unset_is_a_mismatch(tmp_path: Path) -> None:
    nova = tmp_path / "nova.conf"
    nova.write_text("[DEFAULT]\nenabled_apis = metadata\n")
    res = openimds("config", "check", *files_args(nova, S0 / "metadata_agent.ini"))
    assert res.returncode == 1
    assert f"not set in {nova}" in res.stderr


def test_all_in_one_compares_within_one_file(tmp_path: Path) -> None:
    f = tmp_path / "openimds.conf"
    f.write_text("[DEFAULT]\nmetadata_proxy_shared_secret = a\n"
                 "[neutron]\nmetadata_proxy_shared_secret = b\n")
    res = openimds("config", "check", *files_args(f))
    assert res.returncode == 1
    assert "# all-in-one (" in res.stdout
    assert f"{f} [neutron] metadata_proxy_shared_secret" in res.stderr
    assert f"{f} [DEFAULT] metadata_proxy_shared_secret" in res.stderr


@pytest.mark.parametrize(
    ("text", "section", "option"),
    [("[DEFAULT]\nmetadata_listen_port = 99999\n", "DEFAULT", "metadata_listen_port"),
     ("[neutron]\nservice_metadata_proxy = maybe\n", "neutron", "service_metadata_proxy")],
)
def test_invalid_value_exit_2_one_line(tmp_path: Path, text: str, section: str,
                                       option: str) -> None:
    nova = tmp_path / "nova.conf"
    nova.write_text(text)
    res = openimds("config", "check", *files_args(nova))
    assert res.returncode == 2
    assert res.stdout == ""
    err = res.stderr.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {nova}: [{section}] {option}: invalid value")


def test_unknown_option_warned(tmp_path: Path) -> None:
    l3 = tmp_path / "l3_agent.ini"
    l3.write_text("[DEFAULT]\nenable_metadata_proxi = True\n")
    res = openimds("config", "check", *files_args(l3))
    assert res.returncode == 0
    assert (f"warning: {l3}: [DEFAULT] enable_metadata_proxi: unknown option, ignored"
            in res.stderr)
    assert "# l3-agent (" in res.stdout
    assert "enable_metadata_proxy = True\n" in res.stdout  # default, not from the file


def test_service_flag_and_dhcp_agent_in_name() -> None:
    res = openimds("config", "check", *files_args(S0 / "dhcp-variant" / "dhcp_agent.in"))
    assert res.returncode == 0, res.stderr
    assert "# dhcp-agent (" in res.stdout
    assert "enable_isolated_metadata = True  # " in res.stdout
    res = openimds("config", "check", "--service", "ns-metadata-proxy")
    assert res.returncode == 0
    assert "# ns-metadata-proxy (no files, defaults only)" in res.stdout
    assert "metadata_port = 9697" in res.stdout


def test_plan_checks_shares_unrecognised_files() -> None:
    plan = plan_checks(["neutron.conf", "dhcp_agent.ini", "l3_agent.ini"])
    assert plan == [("dhcp-agent", ["neutron.conf", "dhcp_agent.ini"]),
                    ("l3-agent", ["neutron.conf", "l3_agent.ini"])]
    assert plan_checks(["a.conf"]) == [("all-in-one", ["a.conf"])]
    assert plan_checks(["nova.conf"], "all-in-one") == [("all-in-one", ["nova.conf"])]


def test_run_check_every_seed_file_in_process() -> None:
    # every seed snippet at once: loads, only the known secret mismatch is reported
    files = [str(p) for p in sorted(SEEDS.rglob("*")) if p.is_file() and p.name != "README.md"]
    out, err = io.StringIO(), io.StringIO()
    rc = run_check(files, [], None, out, err)
    assert rc == 1
    assert "unknown" not in err.getvalue()
    assert err.getvalue().count("secrets differ") == 1
