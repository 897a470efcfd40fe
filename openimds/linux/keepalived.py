"""keepalived as a daemon tracked by its pid file, one per HA router namespace (and one per
DHCP namespace holding a network's metadata next hop, under its own `subdir`).

`render_vrrp_conf(VrrpConf)` is the one pure renderer both users share: l3/ha.py (an HA
router, multicast VRRP over its HA network) and dhcp/vrrp.py (the isolated-subnet metadata
next hop, unicast VRRP between the network's DHCP ports).

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
import ipaddress
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from openimds.linux import procfs
from openimds.linux.files import read_text, write_atomic
from openimds.linux.process import CommandFailed, run

__all__ = [
    "KeepalivedFailed",
    "KeepalivedSupervisor",
    "VrrpConf",
    "canonical_cidr",
    "keepalived_argv",
    "render_vrrp_conf",
    "runs_config",
]

LOG = logging.getLogger(__name__)

PRIORITY = 50  # Neutron's HA_DEFAULT_PRIORITY: equal everywhere, nopreempt decides
GARP_MASTER_DELAY = 60  # Neutron's: a second round of gratuitous ARPs a minute later


@dataclass(frozen=True)
class VrrpConf:
    """One keepalived with one VRRP instance, every copy `state BACKUP`, equal priority and
    `nopreempt`: a node that comes back never takes the master role from the one holding it.

    `vips` are carried in the advertisements (`virtual_ipaddress`), `excluded` are only
    added/removed with the state (`virtual_ipaddress_excluded`); both (cidr, device).
    `unicast_src`/`unicast_peers`: unicast VRRP (no multicast advert on the link, and with
    `check_unicast_src` an advert from any other source is dropped)."""

    name: str  # global_defs router_id (keepalived keeps it short)
    vr_id: int
    device: str
    vips: tuple[tuple[str, str], ...]
    excluded: tuple[tuple[str, str], ...] = ()
    advert_int: int = 2
    auth_type: str | None = None  # AH | PASS, with auth_password
    auth_password: str | None = None
    unicast_src: str | None = None
    unicast_peers: tuple[str, ...] = ()


def canonical_cidr(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr))


def _vip_key(vip: tuple[str, str]) -> tuple[str, int, str]:
    iface = ipaddress.ip_interface(vip[0])
    return (vip[1], iface.version, str(iface))


def render_vrrp_conf(conf: VrrpConf) -> str:
    """keepalived.conf text (deterministic: the supervisor compares it with the file on disk
    to decide on a reload)."""
    if not 1 <= conf.vr_id <= 255:
        raise ValueError(f"VRRP id {conf.vr_id} is outside 1..255")
    lines = [
        "global_defs {",
        f"    router_id {conf.name[:36]}",
        "    vrrp_garp_master_repeat 5",
        "}",
        f"vrrp_instance VR_{conf.vr_id} {{",
        "    state BACKUP",
        f"    interface {conf.device}",
        f"    virtual_router_id {conf.vr_id}",
        f"    priority {PRIORITY}",
        "    nopreempt",
        f"    advert_int {conf.advert_int}",
        f"    garp_master_delay {GARP_MASTER_DELAY}",
    ]
    if conf.unicast_src is not None:
        lines.append(f"    unicast_src_ip {conf.unicast_src}")
        lines.append("    check_unicast_src")
        lines.append("    unicast_peer {")
        lines += [f"        {peer}" for peer in sorted(conf.unicast_peers, key=_ip_key)]
        lines.append("    }")
    if conf.auth_password:
        lines += [
            "    authentication {",
            f"        auth_type {conf.auth_type or 'PASS'}",
            f"        auth_pass {conf.auth_password[:8]}",
            "    }",
        ]
    lines.append("    virtual_ipaddress {")
    for cidr, dev in sorted(conf.vips, key=_vip_key):
        lines.append(f"        {canonical_cidr(cidr)} dev {dev}")
    lines.append("    }")
    if conf.excluded:
        lines.append("    virtual_ipaddress_excluded {")
        for cidr, dev in sorted(conf.excluded, key=_vip_key):
            lines.append(f"        {canonical_cidr(cidr)} dev {dev}")
        lines.append("    }")
    lines.append("}")
    return "".join(f"{line}\n" for line in lines)


def _ip_key(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return (addr.version, int(addr))


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
                 ready_timeout: float = 10.0, stop_timeout: float = 5.0,
                 subdir: str = "ha_confs") -> None:
        # One folder per user: an L3 and a DHCP agent may share one state_path.
        self.root = os.path.join(state_path, subdir)
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
