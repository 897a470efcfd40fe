"""The node harness's own rules (tests/support/node.py): what cleanup removes, in which order,
and that it stops only what names its state directory."""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.support.node import REPO, Sandbox, wait_for


def test_cleanup_order_agents_namespaces_first_then_ours_last_made_first() -> None:
    box = Sandbox("oit-unit")
    try:
        box.namespaces += ["oit-fab-x", "oit-g-1", "oit-g-2"]
        box.resource_ids.add("net-1")
        assert box.namespace_names() == [
            "qdhcp-net-1", "qrouter-net-1", "oit-g-2", "oit-g-1", "oit-fab-x"]
    finally:
        box.remove_everything()


def test_state_directory_is_unique_traversable_and_removed() -> None:
    a, b = Sandbox("oit-unit"), Sandbox("oit-unit")
    try:
        assert a.root != b.root and a.tag != b.tag
        assert a.root.stat().st_mode & 0o777 == 0o755  # dnsmasq reads it as another user
        script = a.write_udhcpc_script()
        assert script.read_text().startswith("#!/bin/sh") and script.stat().st_mode & 0o111
    finally:
        a.remove_everything()
        b.remove_everything()
    assert not a.root.exists() and not b.root.exists()


def test_remove_everything_kills_only_processes_naming_its_directory() -> None:
    mine, other = Sandbox("oit-unit"), Sandbox("oit-unit")
    # The directory is an argument, as a daemon's config path would be. Not `sh -c "sleep 60"
    # DIR`: the shell may exec sleep in place, and then the directory leaves the command line.
    # Popen returns after the exec, so the command line is final when the cleanup reads it.
    def sleeper(root: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()", str(root)])

    ours, theirs = sleeper(mine.root), sleeper(other.root)
    try:
        mine.remove_everything()
        assert wait_for(lambda: ours.poll() is not None) and ours.returncode == -9
        assert theirs.poll() is None
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()
        other.remove_everything()


def test_kill_marked_spares_the_caller() -> None:
    # A process whose own command line carries the marker runs the cleanup: it must survive.
    marker = f"oit-unit-mark-{uuid.uuid4().hex}"
    code = ("import sys; from tests.support.node import kill_marked; "
            "kill_marked(sys.argv[1]); print('alive')")
    proc = subprocess.run([sys.executable, "-c", code, marker], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert (proc.returncode, proc.stdout.strip()) == (0, "alive"), proc.stderr


def test_cleanup_of_a_namespace_never_made_is_quiet() -> None:
    box = Sandbox("oit-unit")
    box.namespaces.append("oit-g-unit-absent")
    box.remove_everything()
    assert not box.root.exists()
