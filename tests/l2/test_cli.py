"""`openimds l2-agent` refuses a malformed mapping before touching anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from openimds.l2.agent import parse_mappings


def test_parse_mappings() -> None:
    assert parse_mappings(["physnet1:eth1", " physnet2:bond0 "]) == {"physnet1": "eth1",
                                                                    "physnet2": "bond0"}
    with pytest.raises(ValueError, match="'eth1' is not <physical_network>:<interface>"):
        parse_mappings(["eth1"])


def test_malformed_mapping_exits_2_with_the_option_named(tmp_path: Path) -> None:
    conf = tmp_path / "linuxbridge_agent.ini"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n[linux_bridge]\n"
                    "physical_interface_mappings = physnet1\n")
    proc = subprocess.run([sys.executable, "-m", "openimds", "l2-agent", "--config-file",
                           str(conf)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "[linux_bridge] physical_interface_mappings: 'physnet1'" in proc.stderr
