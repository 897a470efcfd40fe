"""`InstanceSource`: the one interface the metadata API needs from the inventory.

Declared here, by its consumer, and kept narrow. Implementations:

* `DictSource` (below): views held in memory; tests and the demo mode.
* `StoreSource` (`store_source.py`): the inventory, with per-instance views cached until the
  change feed reports a change to the instance or to anything it is rendered from.

Methods are async so a cache miss can run its query off the event loop; a hit must not await
anything slow. A source returns the *same* view object until that instance changes, which lets
the responder cache rendered trees by identity.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from openimds.metadata.view import InstanceView

__all__ = ["AddressMatch", "CachedViews", "DictSource", "InstanceSource", "PasswordResult"]


@dataclass(frozen=True, slots=True)
class AddressMatch:
    """A port holding the caller's address: who owns it and on which network."""

    port_id: str
    network_id: str
    device_id: str
    project_id: str


class PasswordResult(enum.Enum):
    SET = "set"
    ALREADY_SET = "already-set"
    NOT_FOUND = "not-found"


class InstanceSource(Protocol):
    async def view_for_instance(self, uuid: str) -> InstanceView | None:
        """The instance's view, or None when no such (live) instance exists."""
        ...

    async def ports_for_address(self, address: str) -> list[AddressMatch]:
        """Ports, with a non-empty device id, whose fixed IPs include `address` (any network)."""
        ...

    async def ports_for_provider(self, provider: str, address: str) -> list[AddressMatch] | None:
        """Ports with `address` on the networks `provider` serves; None if it serves none."""
        ...

    async def set_password(self, uuid: str, password: str) -> PasswordResult:
        """Store the guest's password once; ALREADY_SET if one is stored already."""
        ...

    def ready(self) -> bool:
        """True once the source can answer (first sync done)."""
        ...


class CachedViews(Protocol):
    """What a source offers the answers kept as bytes (`answers.py`), besides `InstanceSource`.

    `cached_view` is synchronous and never loads: the view the source would hand out right now
    from memory, or None (not loaded, or dropped by a change). A kept answer is valid while its
    view is still that very object. `on_forget` listeners hear every instance whose cached view
    was dropped or replaced, so answers built from it can be let go at once.
    """

    def cached_view(self, uuid: str) -> InstanceView | None: ...

    def add_forget_listener(self, listener: Callable[[str], None]) -> None: ...


class DictSource:
    """Views kept in memory. `providers` maps a provider id to the network ids it serves."""

    def __init__(
        self,
        views: Iterable[InstanceView] = (),
        *,
        providers: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self._views: dict[str, InstanceView] = {view.uuid: view for view in views}
        self._providers = {k: frozenset(nets) for k, nets in (providers or {}).items()}
        self._forget_listeners: list[Callable[[str], None]] = []

    def _forgot(self, uuid: str) -> None:
        for listener in self._forget_listeners:
            listener(uuid)

    def put(self, view: InstanceView) -> None:
        self._views[view.uuid] = view
        self._forgot(view.uuid)

    def delete(self, uuid: str) -> None:
        self._views.pop(uuid, None)
        self._forgot(uuid)

    def cached_view(self, uuid: str) -> InstanceView | None:
        return self._views.get(uuid)

    def add_forget_listener(self, listener: Callable[[str], None]) -> None:
        self._forget_listeners.append(listener)

    async def view_for_instance(self, uuid: str) -> InstanceView | None:
        return self._views.get(uuid)

    def _matches(self, address: str) -> list[AddressMatch]:
        return [
            AddressMatch(port.id, port.network_id, view.uuid, view.project_id)
            for view in self._views.values()
            for port in view.ports
            if any(fip.ip_address == address for fip in port.fixed_ips)
        ]

    async def ports_for_address(self, address: str) -> list[AddressMatch]:
        return self._matches(address)

    async def ports_for_provider(self, provider: str, address: str) -> list[AddressMatch] | None:
        networks = self._providers.get(provider)
        if not networks:
            return None
        return [m for m in self._matches(address) if m.network_id in networks]

    async def set_password(self, uuid: str, password: str) -> PasswordResult:
        view = self._views.get(uuid)
        if view is None:
            return PasswordResult.NOT_FOUND
        if view.password:
            return PasswordResult.ALREADY_SET
        self._views[uuid] = replace(view, password=password)
        self._forgot(uuid)
        return PasswordResult.SET

    def ready(self) -> bool:
        return True
