"""keepalived as a daemon tracked by its pid file, one per HA router namespace.

Like haproxy (proxy/supervisor.py) and dnsmasq (linux/dnsmasq.py), everything is rediscovered
from files under `state_path` (`ha_confs/<router id>/keepalived.conf`, `keepalived.pid`,
`keepalived-vrrp.pid`) and /proc, so an agent that restarts adopts a running keepalived
instead of restarting it (which would cost a VRRP election):

    ensure(router_id, text, netns)  start | adopt | nothing | reload (SIGHUP) | restart (died)
    stop(router_id)                 SIGTERM by pid (verified), then the files go
    pid(router_id)                  the live parent pid, verified through /proc
    owned_ids()                     routers with a config on disk

A pid is signalled only after /proc/<pid>/cmdline shows keepalived with *our* `-f <config>`,
so a recycled pid is never touched. keepalived daemonises: the launching process returns once
the parent wrote its pid file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence

from openimds.linux import procfs
from openimds.linux.files import read_text, write_atomic
from openimds.linux.process import CommandFailed, run

__all__ = ["KeepalivedFailed", "KeepalivedSupervisor", "keepalived_argv", "runs_config"]

LOG = logging.getLogger(__name__)


class KeepalivedFailed(RuntimeError):
    """keepalived rejected its config or wrote no pid file in time."""


def keepalived_argv(binary: str, conf: str, pidfile: str, vrrp_pidfile: str) -> list[str]:
    """VRRP only (-P), our config and pid files, no syslog (-G: a namespace's keepalived must
    not need the host's /dev/log), details of state changes in the log (-D)."""
    return [binary, "-P", "-G", "-D", "-f", conf, "-p", pidfile, "-r", vrrp_pidfile]


def runs_config(argv: Sequence[str], conf: str) -> bool:
    """argv is keepalived's, with `-f <conf>` (pure)."""
    if not argv or os.path.basename(argv[0]) != "keepalived":
        return False
    return any(a == "-f" and b == conf for a, b in zip(argv, argv[1:], strict=False))


class KeepalivedSupervisor:
    def __init__(self, state_path: str, *, keepalived: str = "keepalived",
                 ready_timeout: float = 10.0, stop_timeout: float = 5.0) -> None:
        self.root = os.path.join(state_path, "ha_confs")
        self.keepalived = keepalived
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout

    def folder(self, router_id: str) -> str:
        return os.path.join(self.root, router_id)

    def conf_path(self, router_id: str) -> str:
        return os.path.join(self.folder(router_id), "keepalived.conf")

    def pidfile(self, router_id: str) -> str:
        return os.path.join(self.folder(router_id), "keepalived.pid")

    def vrrp_pidfile(self, router_id: str) -> str:
        return os.path.join(self.folder(router_id), "keepalived-vrrp.pid")

    # -- verbs -------------------------------------------------------------------------

    def ensure(self, router_id: str, text: str, netns: str) -> str:
        """Make keepalived run in `netns` with exactly `text`; returns what was done."""
        conf = self.conf_path(router_id)
        on_disk = read_text(conf)
        pid = self._live_pid(router_id, netns)
        if pid is not None and on_disk == text:
            return "unchanged"
        self._install(conf, text, netns)
        if pid is not None:
            # keepalived re-reads its config on SIGHUP and keeps the VRRP state it has.
            self._signal(pid, conf, signal.SIGHUP)
            LOG.info("keepalived %s reloaded (pid %d)", router_id, pid)
            return "reloaded"
        strays = self._pids(conf)
        if strays:
            LOG.warning("keepalived %s: stopping a copy without pid file: %s", router_id, strays)
            self._terminate(strays, conf)
        for path in (self.pidfile(router_id), self.vrrp_pidfile(router_id)):
            _unlink(path)
        argv = keepalived_argv(self.keepalived, conf, self.pidfile(router_id),
                               self.vrrp_pidfile(router_id))
        try:
            run(argv, netns=netns, env=procfs.daemon_env())
        except CommandFailed as exc:
            raise KeepalivedFailed(f"keepalived for router {router_id}: {exc}") from exc
        deadline = time.monotonic() + self.ready_timeout
        while (new := self._live_pid(router_id, netns)) is None:
            if time.monotonic() > deadline:
                raise KeepalivedFailed(f"keepalived for router {router_id} wrote no usable pid "
                                       f"file {self.pidfile(router_id)}")
            time.sleep(0.02)
        LOG.info("keepalived %s started (pid %d, netns %s)", router_id, new, netns)
        return "started"

    def stop(self, router_id: str) -> bool:
        conf = self.conf_path(router_id)
        pids = self._pids(conf)
        if pids:
            self._terminate(pids, conf)
            LOG.info("keepalived %s stopped (pids %s)", router_id, pids)
        shutil.rmtree(self.folder(router_id), ignore_errors=True)
        return bool(pids)

    def pid(self, router_id: str) -> int | None:
        pid = procfs.read_pid_file(self.pidfile(router_id))
        if pid is None:
            return None
        argv = procfs.live_argv(pid)
        return pid if argv is not None and runs_config(argv, self.conf_path(router_id)) else None

    def owned_ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(self.conf_path(n)))

    # -- internals ---------------------------------------------------------------------

    def _live_pid(self, router_id: str, netns: str) -> int | None:
        pid = self.pid(router_id)
        if pid is not None and not procfs.pid_in_netns(pid, netns):
            # The namespace was deleted and made again: this one speaks VRRP into nothing.
            LOG.warning("keepalived pid %d of router %s is not in netns %s", pid, router_id,
                        netns)
            self._terminate([pid], self.conf_path(router_id))
            return None
        return pid

    def _install(self, conf: str, text: str, netns: str) -> None:
        def check(tmp: str) -> None:
            # In the namespace: keepalived -t also checks that the devices named exist.
            try:
                run([self.keepalived, "-t", "-f", tmp], netns=netns)
            except CommandFailed as exc:
                raise KeepalivedFailed(f"keepalived rejected the config for {conf}: "
                                       f"{exc}") from exc

        os.makedirs(os.path.dirname(conf), mode=0o755, exist_ok=True)
        write_atomic(conf, text, 0o600, check=check)  # may hold the VRRP password

    def _pids(self, conf: str) -> list[int]:
        out = []
        for pid in procfs.all_pids():
            argv = procfs.live_argv(pid)
            if argv is not None and runs_config(argv, conf):
                out.append(pid)
        return sorted(out)

    def _signal(self, pid: int, conf: str, sig: signal.Signals) -> None:
        argv = procfs.live_argv(pid)  # re-verified right before signalling
        if argv is not None and runs_config(argv, conf):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _terminate(self, pids: Sequence[int], conf: str) -> None:
        for pid in pids:
            self._signal(pid, conf, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if not any(self._alive(p, conf) for p in pids):
                return
            time.sleep(0.02)
        for pid in pids:
            self._signal(pid, conf, signal.SIGKILL)

    @staticmethod
    def _alive(pid: int, conf: str) -> bool:
        argv = procfs.live_argv(pid)
        return argv is not None and runs_config(argv, conf)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
