"""The process runner: every way a command can fail comes out as CommandFailed."""

from __future__ import annotations

import pytest

from openimds.linux.process import CommandFailed, run, spawn


def test_output_and_exit_status() -> None:
    assert run(["sh", "-c", "echo hi"]).stdout == "hi\n"
    with pytest.raises(CommandFailed) as err:
        run(["sh", "-c", "echo oops >&2; exit 3"])
    assert err.value.returncode == 3 and "oops" in err.value.stderr
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_missing_tool_and_timeout_are_command_failures() -> None:
    with pytest.raises(CommandFailed) as err:
        run(["openimds-no-such-tool-xyz"])
    assert err.value.returncode == 127
    with pytest.raises(CommandFailed) as err:
        run(["sleep", "5"], timeout=0.2)
    assert "timed out" in err.value.stderr
    with pytest.raises(CommandFailed):
        spawn(["openimds-no-such-tool-xyz"])
