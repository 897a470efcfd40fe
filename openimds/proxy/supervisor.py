"""Keep one daemonised haproxy per namespace in the state its ProxySpec describes.

The supervisor holds no state that matters: everything is rediscovered from the files it owns
(`<state>/ns-metadata-proxy/<id>.conf`, the pid file named in that config) and from /proc.
So an agent that restarts *adopts* a healthy haproxy instead of restarting it, and any agent
can call `ensure` as often as it likes (level-triggered, STYLE items 6-8):

    ensure(spec, netns)   start | adopt | nothing | reload (config text changed) | restart (died)
    stop(resource_id)     kill by pid (verified), remove config, pid file and admin socket
    owned_ids()           ids with a config on disk, so a reconciler can stop what its plan lacks

A pid is only ever signalled after /proc/<pid>/cmdline proves it is haproxy started with *our*
config path, so a recycled pid is never killed. Reloads use haproxy's seamless reload
(`-x <admin socket> -sf <old pid>`): the new process takes over the old listening sockets, so
the listener never closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import re
import signal
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from openimds.linux import procfs
from openimds.linux.files import read_text, write_atomic
from openimds.linux.process import CommandFailed, run
from openimds.linux.procfs import listening_sockets, parse_proc_net_tcp
from openimds.proxy.haproxy import (
    ProxySpec,
    ResourceKind,
    config_path,
    map_path,
    owned_proxy_ids,
    pidfile_path,
    render_haproxy_cfg,
)

__all__ = [
    "HaproxySupervisor",
    "Outcome",
    "ProxyStartFailed",
    "listening_sockets",
    "parse_proc_net_tcp",
]

LOG = logging.getLogger(__name__)

_PIDFILE_LINE = re.compile(r"^\s*pidfile\s+(\S+)\s*$", re.MULTILINE)
_STATS_LINE = re.compile(r"^\s*stats socket\s+(\S+)", re.MULTILINE)


class Outcome(enum.Enum):
    """What `ensure` did."""

    STARTED = "started"  # nothing was running and nothing had run before
    RESTARTED = "restarted"  # a pid file or tracked pid showed it had run, but it was dead
    ADOPTED = "adopted"  # found running with the wanted config; first time this object saw it
    UNCHANGED = "unchanged"  # running with the wanted config
    RELOADED = "reloaded"  # running with another config; replaced without closing the listener


class ProxyStartFailed(RuntimeError):
    """haproxy did not come up listening in time (or rejected its config)."""


@dataclass(frozen=True)
class _Paths:
    conf: str
    pidfile: str
    stats_socket: str | None


class HaproxySupervisor:
    """ensure/stop haproxy processes whose configs live under `state_path`."""

    def __init__(
        self,
        state_path: str,
        *,
        haproxy: str = "haproxy",
        ready_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.state_path = state_path
        self.haproxy = haproxy
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        # Pids this object has seen running, only to tell ADOPTED from UNCHANGED and
        # STARTED from RESTARTED in logs; correctness never depends on it.
        self._seen: dict[str, int] = {}

    # -- public verbs ------------------------------------------------------------------

    def ensure(self, spec: ProxySpec, netns: str | None) -> Outcome:
        """Make the proxy for `spec` run in `netns` (None = current namespace) with exactly
        the rendered config, listening on every bind. Idempotent."""
        rid = spec.resource_id
        listen_ns = netns
        if spec.identity_source == "haproxy_map":
            # Map mode: haproxy runs here, where the metadata API is reachable, and opens its
            # listeners inside `netns` (as root, before dropping privileges).
            spec = dataclasses.replace(spec, bind_netns=netns)
            netns = None
            _ensure_map_file(spec.map_file)
        text = render_haproxy_cfg(spec)
        conf = config_path(self.state_path, rid)
        on_disk = read_text(conf)
        old_paths = self._paths(rid, on_disk)
        pid = self._live_pid(conf, old_paths.pidfile, netns)
        if pid is not None and listen_ns != netns and on_disk == text \
                and not _binds_listening_in(spec, listen_ns):
            # Its listeners are not in the namespace of that name (deleted and re-created):
            # this haproxy serves a dead namespace; replace it.
            LOG.warning("proxy %s (pid %d) does not listen in netns %s; restarting", rid, pid,
                        listen_ns)
            self._terminate([pid], conf)
            pid = None

        if pid is not None and on_disk == text:
            outcome = Outcome.UNCHANGED if self._seen.get(rid) == pid else Outcome.ADOPTED
            self._seen[rid] = pid
            LOG.debug("proxy %s %s (pid %d)", rid, outcome.value, pid)
            return outcome

        self._install(conf, text)
        if pid is not None:
            reuse_fds = old_paths.stats_socket if _is_socket(old_paths.stats_socket) else None
            if old_paths.pidfile != spec.pidfile:
                # The new process writes the new pid file; drop the old one with the old owner.
                _unlink(old_paths.pidfile)
            try:
                self._exec(conf, spec.pidfile, netns, reuse_fds=reuse_fds, replace_pid=pid)
                new_pid = self._wait_ready(spec, conf, netns, not_pid=pid, listen_ns=listen_ns)
            except ProxyStartFailed:
                # The old process still runs its old config: put that config back so the
                # next ensure() sees the difference and retries instead of reporting UNCHANGED.
                if on_disk is not None:
                    self._write(conf, on_disk)
                raise
            outcome = Outcome.RELOADED
        else:
            had_run = rid in self._seen or os.path.exists(old_paths.pidfile)
            # A haproxy of ours that lost its pid file would otherwise keep serving the old
            # config next to the new one (SO_REUSEPORT lets both bind): stop it first.
            strays = _pids_with_config(conf)
            if strays:
                LOG.warning("proxy %s: stopping haproxy without pid file: %s", rid, strays)
                self._terminate(strays, conf)
            _unlink(spec.pidfile)
            self._exec(conf, spec.pidfile, netns, reuse_fds=None, replace_pid=None)
            new_pid = self._wait_ready(spec, conf, netns, not_pid=None, listen_ns=listen_ns)
            outcome = Outcome.RESTARTED if had_run or strays else Outcome.STARTED
        self._seen[rid] = new_pid
        LOG.info("proxy %s %s (pid %d, netns %s)", rid, outcome.value, new_pid, netns or "-")
        return outcome

    def stop(self, resource_id: str) -> bool:
        """Stop the proxy for `resource_id` and remove its files. True if a process was
        stopped. Also stops old processes of a soft reload that are still draining."""
        conf = config_path(self.state_path, resource_id)
        paths = self._paths(resource_id, read_text(conf))
        pids = set(_pids_with_config(conf))
        stopped = bool(pids)
        if pids:
            self._terminate(sorted(pids), conf)
        for path in (conf, paths.pidfile, paths.stats_socket,
                     map_path(self.state_path, resource_id)):
            _unlink(path)
        self._seen.pop(resource_id, None)
        if stopped:
            LOG.info("proxy %s stopped (pids %s)", resource_id, sorted(pids))
        return stopped

    def write_config(self, spec: ProxySpec) -> str:
        """Validate and atomically write the config for `spec` without touching any process
        (for running haproxy under another supervisor); returns the config path."""
        conf = config_path(self.state_path, spec.resource_id)
        self._install(conf, render_haproxy_cfg(spec))
        return conf

    def pid(self, resource_id: str) -> int | None:
        """The pid of the running proxy (from its pid file, verified to be our haproxy), or
        None. Whatever namespace it is in: `ensure` is what checks the namespace."""
        conf = config_path(self.state_path, resource_id)
        pid = procfs.read_pid_file(self._paths(resource_id, read_text(conf)).pidfile)
        return pid if pid is not None and _is_our_haproxy(pid, conf) else None

    def is_listening(self, spec: ProxySpec) -> bool:
        """True when the running proxy's namespace has a TCP listener on every bind of spec."""
        pid = self.pid(spec.resource_id)
        return pid is not None and _binds_listening(spec, pid)

    def owned_ids(self, kind: ResourceKind | None = None) -> list[str]:
        """Resource ids that have a proxy config on disk (running or not), sorted; with
        `kind`, only those whose config sets that kind's header, so a DHCP and an L3 agent
        sharing a state_path never stop each other's proxies."""
        folder = os.path.dirname(config_path(self.state_path, "x"))
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        ids = sorted(n[: -len(".conf")] for n in names if n.endswith(".conf"))
        if kind is None:
            return ids
        # Ownership by the renderer's own rule (the owner line, else the header it sets).
        return owned_proxy_ids(self.state_path, kind)

    # -- internals ---------------------------------------------------------------------

    def _paths(self, resource_id: str, conf_text: str | None) -> _Paths:
        # The config on disk names the pid file and admin socket it was started with, so
        # stop/reload find them even if the caller's defaults changed since.
        pidfile = pidfile_path(self.state_path, resource_id)
        stats = None
        if conf_text:
            if m := _PIDFILE_LINE.search(conf_text):
                pidfile = m.group(1)
            if m := _STATS_LINE.search(conf_text):
                stats = m.group(1)
        return _Paths(config_path(self.state_path, resource_id), pidfile, stats)

    def _live_pid(self, conf: str, pidfile: str, netns: str | None) -> int | None:
        pid = procfs.read_pid_file(pidfile)
        if pid is None or not _is_our_haproxy(pid, conf):
            return None
        if not procfs.pid_in_netns(pid, netns):
            # The namespace was deleted and re-created: this haproxy serves a dead namespace.
            LOG.warning("proxy pid %d for %s is not in netns %s", pid, conf, netns)
            return None
        return pid

    def _install(self, conf: str, text: str) -> None:
        """Write the config atomically, after haproxy itself accepted it, so a bad spec
        (say an unknown user) never replaces a working config."""
        self._write(conf, text, check=True)

    def _write(self, conf: str, text: str, *, check: bool = False) -> None:
        def haproxy_check(tmp: str) -> None:
            try:
                run([self.haproxy, "-c", "-q", "-f", tmp])
            except CommandFailed as exc:
                raise ProxyStartFailed(
                    f"haproxy rejected the config for {conf}: {exc}"
                ) from exc

        write_atomic(conf, text, 0o644, check=haproxy_check if check else None)

    def _exec(
        self,
        conf: str,
        pidfile: str,
        netns: str | None,
        *,
        reuse_fds: str | None,
        replace_pid: int | None,
    ) -> None:
        # The config says `daemon`: haproxy binds, forks, writes the pid file and its parent
        # exits, so `run` returns once the listener exists and the agent is free to restart.
        argv = [self.haproxy, "-f", conf]
        if reuse_fds:
            argv += ["-x", reuse_fds]
        if replace_pid is not None:
            argv += ["-sf", str(replace_pid)]
        os.makedirs(os.path.dirname(pidfile), mode=0o755, exist_ok=True)
        try:
            run(argv, netns=netns, env=procfs.daemon_env())
        except CommandFailed as exc:
            raise ProxyStartFailed(str(exc)) from exc

    def _wait_ready(
        self, spec: ProxySpec, conf: str, netns: str | None, *, not_pid: int | None,
        listen_ns: str | None,
    ) -> int:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            pid = self._live_pid(conf, spec.pidfile, netns)
            if pid is not None and pid != not_pid and (
                    _binds_listening(spec, pid) if listen_ns == netns
                    else _binds_listening_in(spec, listen_ns)):
                return pid
            if time.monotonic() > deadline:
                raise ProxyStartFailed(
                    f"haproxy for {spec.kind} {spec.resource_id} is not listening on "
                    f"{[f'{b.host}:{b.port}' for b in spec.binds]} after {self.ready_timeout}s "
                    f"(pid file {spec.pidfile}); is the address configured in netns {netns}?"
                )
            time.sleep(0.02)

    def _terminate(self, pids: Iterable[int], conf: str) -> None:
        pids = list(pids)
        for pid in pids:
            _signal(pid, conf, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if not any(_is_our_haproxy(p, conf) for p in pids):
                return
            time.sleep(0.02)
        for pid in pids:
            _signal(pid, conf, signal.SIGKILL)


# -- /proc checks (module level, no state; the reads live in openimds.linux.procfs) --------


def _signal(pid: int, conf: str, sig: signal.Signals) -> None:
    # Re-verify right before signalling: the pid may have exited and been reused meanwhile.
    if _is_our_haproxy(pid, conf):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _is_our_haproxy(pid: int, conf: str) -> bool:
    """pid is a live (non-zombie) haproxy whose argv has `-f <conf>`."""
    argv = procfs.live_argv(pid)
    return argv is not None and _runs_config(argv, conf)


def _runs_config(argv: Sequence[str], conf: str) -> bool:
    """argv is haproxy's, with `-f <conf>` (pure)."""
    if not argv or "haproxy" not in os.path.basename(argv[0]):
        return False
    return any(a == "-f" and b == conf for a, b in zip(argv, argv[1:], strict=False))


def _pids_with_config(conf: str) -> list[int]:
    return sorted(pid for pid in procfs.all_pids() if _is_our_haproxy(pid, conf))


def _binds_listening(spec: ProxySpec, pid: int) -> bool:
    have = listening_sockets(pid)
    return all((b.host, b.port) in have for b in spec.binds)


def _binds_listening_in(spec: ProxySpec, netns: str | None) -> bool:
    """Every bind has a TCP listener in the named namespace (map mode: haproxy runs outside
    it, so its own /proc/<pid>/net shows another namespace's table)."""
    have: set[tuple[str, int]] = set()
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            out = run(["cat", f"/proc/net/{name}"], netns=netns).stdout
        except CommandFailed:
            return False
        have |= parse_proc_net_tcp(out, ipv6=v6)
    return all((b.host, b.port) in have for b in spec.binds)


def _ensure_map_file(path: str | None) -> None:
    """An empty map when there is none yet: haproxy refuses to start without the file, and
    the metadata agent fills it (and the running map) once it sees this proxy."""
    if path is None or os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    # O_EXCL: never truncate a map the metadata agent wrote meanwhile. 0600: it holds
    # signatures; haproxy reads it as root, before dropping privileges.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _is_socket(path: str | None) -> bool:
    try:
        return path is not None and stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _unlink(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
