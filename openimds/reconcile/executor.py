"""The one dumb executor of the appliers' actions (`actions.py`): each action is one verb of
the linux layer, run in order; the first failure raises and the next pass re-observes."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from typing import Any, Protocol

from openimds.linux import dnsmasq, iptables
from openimds.linux.addresses import ensure_address, sync_addresses
from openimds.linux.fabric import ensure_port_link
from openimds.linux.files import write_atomic
from openimds.linux.links import delete_link
from openimds.linux.netns import delete_netns, ensure_netns, set_sysctl
from openimds.reconcile.actions import (
    Action,
    DeleteLink,
    DeleteNamespace,
    EnsureAddresses,
    EnsureKeepalived,
    EnsureNamespace,
    EnsurePortLink,
    EnsureProxy,
    ReloadDnsmasq,
    RemoveTree,
    RestoreIptables,
    SetSysctl,
    StartDnsmasq,
    StopDnsmasq,
    StopKeepalived,
    StopProxy,
    SyncAddresses,
    WriteFile,
)

__all__ = ["Executor", "KeepalivedDriver", "ProxyDriver"]

LOG = logging.getLogger(__name__)


class ProxyDriver(Protocol):
    def ensure(self, spec: Any, netns: str | None) -> Any: ...

    def stop(self, resource_id: str) -> bool: ...


class KeepalivedDriver(Protocol):
    def ensure(self, router_id: str, text: str, netns: str) -> Any: ...

    def stop(self, router_id: str) -> bool: ...


class Executor:
    """Performs actions in order; the first failure raises (the next pass re-observes)."""

    def __init__(self, proxy: ProxyDriver | None = None,
                 keepalived: KeepalivedDriver | None = None) -> None:
        self.proxy = proxy
        self.keepalived = keepalived

    def run(self, actions: Iterable[Action], *,
            log: logging.LoggerAdapter[Any] | logging.Logger | None = None) -> None:
        for action in actions:
            (log or LOG).debug("apply %s", action)
            self.one(action)

    def one(self, a: Action) -> None:  # noqa: C901 - one flat dispatch is the point
        if isinstance(a, EnsureNamespace):
            ensure_netns(a.name)
        elif isinstance(a, DeleteNamespace):
            delete_netns(a.name)
        elif isinstance(a, SetSysctl):
            set_sysctl(a.netns, a.key, a.value)
        elif isinstance(a, EnsurePortLink):
            ensure_port_link(a.fabric, a.network_id, a.port_id, a.netns, a.ifname, a.mac, a.mtu)
        elif isinstance(a, DeleteLink):
            delete_link(a.netns, a.name)
        elif isinstance(a, SyncAddresses):
            sync_addresses(a.netns, a.dev, a.cidrs)
        elif isinstance(a, WriteFile):
            write_atomic(a.path, a.text, a.mode)
        elif isinstance(a, RemoveTree):
            shutil.rmtree(a.path, ignore_errors=True)
        elif isinstance(a, StartDnsmasq):
            pid = dnsmasq.start_dnsmasq(a.argv, a.netns)
            write_atomic(a.marker, f"{pid} {a.digest}\n")
        elif isinstance(a, StopDnsmasq):
            dnsmasq.stop_dnsmasq(a.pid, a.pidfile)
        elif isinstance(a, ReloadDnsmasq):
            found = dnsmasq.find_dnsmasq(a.pidfile)
            if found is None or not dnsmasq.reload_dnsmasq(found.pid, a.pidfile):
                raise RuntimeError(f"no dnsmasq of ours behind {a.pidfile} to reload")
            write_atomic(a.marker, f"{found.pid} {a.digest}\n")
        elif isinstance(a, RestoreIptables):
            iptables.restore(a.netns, a.text, ipv6=a.ipv6)
        elif isinstance(a, EnsureProxy):
            self._proxy().ensure(a.spec, a.netns)
        elif isinstance(a, StopProxy):
            self._proxy().stop(a.resource_id)
        elif isinstance(a, EnsureAddresses):
            for cidr in a.cidrs:
                ensure_address(a.netns, a.dev, cidr)
        elif isinstance(a, EnsureKeepalived):
            self._keepalived().ensure(a.router_id, a.text, a.netns)
        elif isinstance(a, StopKeepalived):
            self._keepalived().stop(a.router_id)
        else:  # pragma: no cover - the union above is closed
            raise TypeError(f"unknown action {a!r}")

    def _keepalived(self) -> KeepalivedDriver:
        if self.keepalived is None:
            raise RuntimeError("a keepalived action needs an Executor built with its driver")
        return self.keepalived

    def _proxy(self) -> ProxyDriver:
        if self.proxy is None:
            raise RuntimeError("a proxy action needs an Executor built with a proxy driver")
        return self.proxy
