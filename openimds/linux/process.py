"""The one way openimds runs a subprocess, optionally inside a network namespace.

Everything that execs a tool (ip, iptables-restore, dnsmasq, haproxy) goes through here so that
namespace entry, error translation and logging are done once.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence

LOG = logging.getLogger(__name__)


class CommandFailed(RuntimeError):
    """A command exited non-zero; carries argv, exit code and stderr for the log."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(self.argv)} exited {returncode}: {stderr.strip()}")


def in_netns(argv: Sequence[str], netns: str | None) -> list[str]:
    """argv prefixed so that it runs inside `netns` (None or "" = the current namespace)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = 60.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion and return its output; raise CommandFailed when `check`."""
    full = in_netns(argv, netns)
    LOG.debug("run: %s", " ".join(full))
    # Callers handle one failure type: a missing tool or a hung one is a failed command too.
    try:
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(full, -1, f"timed out after {timeout} s") from exc
    except OSError as exc:
        raise CommandFailed(full, 127, str(exc)) from exc
    if check and proc.returncode != 0:
        raise CommandFailed(full, proc.returncode, proc.stderr)
    return proc


def spawn(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a long-running command (a daemon kept in the foreground) and return its handle."""
    full = in_netns(argv, netns)
    LOG.debug("spawn: %s", " ".join(full))
    try:
        return subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandFailed(full, 127, str(exc)) from exc
