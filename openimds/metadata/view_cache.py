"""`ViewCache`: the metadata API's cached instance views and the epochs that keep them honest.

The state machine of `StoreSource` (store_source.py), apart from every query and every task:
it is fed plain records (a loaded view with what it was read from, a change-feed record, the
changed rows' facts) and answers what is cached. Nothing here imports SQLAlchemy or awaits, so
its rules are table-tested with plain values (tests/metadata/test_view_cache.py).

* `begin_load` / `finish_load`: a load keeps its result only if nothing touching that instance
  (one of the ports it read, or any subnet/network/key pair) was invalidated while it ran, so a
  change applied mid-load can never be overwritten by the older read.
* `apply(changes, ports, keys)`: drops every cached view a change can affect: the instance
  itself; its ports (including a port newly given its device id); the subnets and networks it
  sits on, and DHCP ports there (they decide `dhcp_server` and the MTU); its key pair. An
  instance created or changed (or a compute port given its device id) is queued in `wanted`
  for a background load.
* `last`: the last view cached per instance, kept when the feed drops it, for the degraded
  mode (served when the reload cannot reach the database).
* Direct-mode address lookups are cached the same way, keyed by IP and dropped per port.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from openimds.feed.kinds import Kind
from openimds.metadata.source import AddressMatch, PasswordResult
from openimds.metadata.view import InstanceView
from openimds.wire import DHCP_OWNER

__all__ = ["Change", "Deps", "DhcpServers", "KeyFacts", "LoadTicket", "PortFacts", "ViewCache"]


class Change(Protocol):
    """One change-feed record, as the cache reads it."""

    @property
    def revision(self) -> int: ...
    @property
    def resource(self) -> str: ...
    @property
    def resource_id(self) -> str: ...
    @property
    def op(self) -> str: ...


@dataclass(frozen=True)
class DhcpServers:
    """The `network:dhcp` ports of one network: first address per subnet, and their ids."""

    by_subnet: dict[str, str]
    port_ids: frozenset[str]


@dataclass
class Deps:
    """What a loaded view was rendered from, for invalidation."""

    ports: set[str] = field(default_factory=set)
    subnets: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    keypair: tuple[str | None, str] | None = None
    # DHCP servers read for networks that were not in the caller's DHCP cache.
    dhcp: dict[str, DhcpServers] = field(default_factory=dict)


@dataclass(frozen=True)
class PortFacts:
    """A changed port as it is now (None fields when it was deleted)."""

    port_id: str
    device_id: str | None = None
    device_owner: str | None = None
    network_id: str | None = None
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyFacts:
    """A changed key pair as it is now (None fields when it was deleted)."""

    keypair_id: str
    user_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class LoadTicket:
    """The epochs a load started at: `finish_load` keeps its result only if they still hold."""

    uuid: str
    epochs: tuple[int, int]
    port_changes: int
    dhcp_epoch: int


class ViewCache:
    """See the module docstring. `prefetch`: queue created and changed instances in `wanted`
    (and call `on_want` so a loader wakes up)."""

    def __init__(self, *, prefetch: bool = True,
                 on_want: Callable[[], None] | None = None) -> None:
        self.views: dict[str, InstanceView] = {}
        # The last view cached per instance, kept when the feed drops it: served when its
        # reload cannot reach the database.
        self.last: dict[str, InstanceView] = {}
        self._deps: dict[str, Deps] = {}
        self._by_port: dict[str, set[str]] = defaultdict(set)
        self._by_subnet: dict[str, set[str]] = defaultdict(set)
        self._by_network: dict[str, set[str]] = defaultdict(set)
        self._by_key: dict[tuple[str | None, str], set[str]] = defaultdict(set)
        self._epoch: dict[str, int] = defaultdict(int)
        self._global_epoch = 0
        # Port changes counted, and the count at each port's last change: a load is stale if
        # a port it read changed after it started (not every load in flight, as a global
        # epoch would make it: with ports created every few ms, no load would ever stick).
        self._port_changes = 0
        self._port_changed: dict[str, int] = {}
        # Instances the feed created or changed, to load in the background one at a time so
        # their next request (a boot's first) is a cache hit; insertion-ordered, value = tries.
        self.prefetch = prefetch
        self.wanted: dict[str, int] = {}
        self.on_want = on_want
        self._addresses: dict[str, list[AddressMatch]] = {}
        self._address_ports: dict[str, set[str]] = defaultdict(set)  # port id -> ips cached
        self.address_epoch = 0
        self._dhcp: dict[str, DhcpServers] = {}
        self._dhcp_port_network: dict[str, str] = {}
        self._dhcp_epoch = 0
        self._forget_listeners: list[Callable[[str], None]] = []

    # ---- views -------------------------------------------------------------------------------
    def add_forget_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(uuid)` whenever that instance's cached view is dropped."""
        self._forget_listeners.append(listener)

    def dhcp_known(self) -> dict[str, DhcpServers]:
        """The DHCP servers known per network, for a load to skip reading them again."""
        return dict(self._dhcp)

    def begin_load(self, uuid: str) -> LoadTicket:
        return LoadTicket(uuid, (self._epoch[uuid], self._global_epoch), self._port_changes,
                          self._dhcp_epoch)

    def finish_load(
        self, ticket: LoadTicket, loaded: tuple[InstanceView, Deps] | None
    ) -> InstanceView | None:
        """Take a load's result (None: the instance does not exist); returns its view."""
        uuid = ticket.uuid
        if loaded is None:
            self.last.pop(uuid, None)  # gone: nothing to fall back on any more
            return None
        view, deps = loaded
        if ticket.dhcp_epoch == self._dhcp_epoch:
            for network_id, servers in deps.dhcp.items():
                self._dhcp[network_id] = servers
                for port_id in servers.port_ids:
                    self._dhcp_port_network[port_id] = network_id
        # Only a view still current when it arrives is cached, and so becomes the last view:
        # one that a change overtook may miss that change (a port attached meanwhile).
        overtaken = any(self._port_changed.get(p, 0) > ticket.port_changes for p in deps.ports)
        if ticket.epochs == (self._epoch[uuid], self._global_epoch) and not overtaken:
            self.remember(view, deps)
        return view

    def remember(self, view: InstanceView, deps: Deps) -> None:
        uuid = view.uuid
        self.views[uuid] = view
        self.last[uuid] = view
        self._deps[uuid] = deps
        for port in deps.ports:
            self._by_port[port].add(uuid)
        for subnet in deps.subnets:
            self._by_subnet[subnet].add(uuid)
        for network in deps.networks:
            self._by_network[network].add(uuid)
        if deps.keypair is not None:
            self._by_key[deps.keypair].add(uuid)

    def forget(self, uuid: str) -> None:
        self._epoch[uuid] += 1
        self.views.pop(uuid, None)
        for listener in self._forget_listeners:
            listener(uuid)
        deps = self._deps.pop(uuid, None)
        if deps is None:
            return
        for index, keys in (
            (self._by_port, deps.ports),
            (self._by_subnet, deps.subnets),
            (self._by_network, deps.networks),
        ):
            for key in keys:
                owners = index.get(key)
                if owners is not None:
                    owners.discard(uuid)
                    if not owners:
                        del index[key]
        if deps.keypair is not None:
            owners = self._by_key.get(deps.keypair)
            if owners is not None:
                owners.discard(uuid)
                if not owners:
                    del self._by_key[deps.keypair]

    def want(self, uuid: str | None) -> None:
        """Queue `uuid`'s view for a background load (it was created or changed)."""
        if uuid and self.prefetch and uuid not in self.wanted:
            self.wanted[uuid] = 0
            if self.on_want is not None:
                self.on_want()

    def password_written(self, uuid: str, password: str, result: PasswordResult) -> None:
        """The database now holds `result` of a password write: the guest's next GET must see
        it without waiting for the feed.

        The cached view is kept with the password the database now holds (no reload needed, so
        the instance stays served through a database outage); the feed's record of this write
        drops it as usual, as it drops anything else changed meanwhile."""
        cached = self.views.get(uuid)
        deps = self._deps.get(uuid)
        last = self.last.get(uuid)
        self.forget(uuid)
        if result is PasswordResult.SET and cached is not None and deps is not None:
            self.remember(replace(cached, password=password), deps)
        elif result is PasswordResult.SET and last is not None:
            # The feed dropped the view first (its record of this write came back before we
            # did): the last view, served if the database goes away before the reload, must
            # still refuse a second password.
            self.last[uuid] = replace(last, password=password)

    # ---- direct-mode addresses ---------------------------------------------------------------
    def address(self, address: str) -> list[AddressMatch] | None:
        return self._addresses.get(address)

    def keep_address(self, epoch: int, address: str, found: list[AddressMatch],
                     port_ids: Iterable[str]) -> None:
        """Cache a lookup started at `epoch` unless a port changed since."""
        if epoch == self.address_epoch:
            self._addresses[address] = found
            for port_id in port_ids:
                self._address_ports[port_id].add(address)

    # ---- invalidation ------------------------------------------------------------------------
    def drop_all(self) -> None:
        """Forget every cached view, address and DHCP fact (the feed lost continuity)."""
        for uuid in list(self.views) + list(self._deps):
            self.forget(uuid)
        self._addresses.clear()
        self._address_ports.clear()
        self.address_epoch += 1
        self._dhcp.clear()
        self._dhcp_port_network.clear()
        self._dhcp_epoch += 1
        self._global_epoch += 1

    def _drop_dhcp(self, network_id: str) -> None:
        """A DHCP port (or the network) changed: every instance there shows dhcp_server/MTU."""
        self._dhcp_epoch += 1
        servers = self._dhcp.pop(network_id, None)
        if servers is not None:
            for port_id in servers.port_ids:
                self._dhcp_port_network.pop(port_id, None)
        for uuid in list(self._by_network.get(network_id, ())):
            self.forget(uuid)
        self._global_epoch += 1

    def _drop_addresses(self, port_id: str, addresses: Iterable[str]) -> None:
        self.address_epoch += 1
        for ip in self._address_ports.pop(port_id, set()) | set(addresses):
            self._addresses.pop(ip, None)

    def apply(
        self, changes: Sequence[Change], ports: Iterable[PortFacts], keys: Iterable[KeyFacts]
    ) -> None:
        """Invalidate what `changes` can affect (the facts are the changed rows as they are now)."""
        port_facts: Mapping[str, PortFacts] = {p.port_id: p for p in ports}
        key_facts: Mapping[str, KeyFacts] = {k.keypair_id: k for k in keys}
        for change in changes:
            rid = change.resource_id
            if change.resource == Kind.INSTANCE:
                # Address matches hold only port facts, so they stay valid.
                self.forget(rid)
                if change.op == "delete":
                    self.last.pop(rid, None)
                    self.wanted.pop(rid, None)
                else:
                    self.want(rid)
            elif change.resource == Kind.PORT:
                facts = port_facts.get(rid) or PortFacts(rid)
                # The previous owner of a re-assigned port may be loading right now: its load
                # read this port, so it is not kept (`finish_load`). The new owner's epoch
                # moves below.
                self._port_changes += 1
                self._port_changed[rid] = self._port_changes
                for uuid in list(self._by_port.get(rid, ())):
                    self.forget(uuid)
                if facts.device_id:
                    self.forget(facts.device_id)
                    if not facts.device_owner or facts.device_owner.startswith("compute:"):
                        self.want(facts.device_id)
                dhcp_networks = {self._dhcp_port_network.get(rid)}
                if facts.device_owner == DHCP_OWNER:
                    dhcp_networks.add(facts.network_id)
                for network_id in dhcp_networks - {None}:
                    assert network_id is not None
                    self._drop_dhcp(network_id)
                self._drop_addresses(rid, facts.addresses)
            elif change.resource == Kind.SUBNET:
                for uuid in list(self._by_subnet.get(rid, ())):
                    self.forget(uuid)
                self._global_epoch += 1
            elif change.resource == Kind.NETWORK:
                self._drop_dhcp(rid)
            elif change.resource == Kind.KEYPAIR:
                facts_k = key_facts.get(rid)
                if facts_k is not None and facts_k.name is not None:
                    targets = set(self._by_key.get((facts_k.user_id, facts_k.name), ()))
                else:
                    # A deleted key pair: we no longer know its name, so drop every view that
                    # shows a key pair (rare, and correct).
                    targets = {u for u, d in self._deps.items() if d.keypair is not None}
                for uuid in targets:
                    self.forget(uuid)
                self._global_epoch += 1
            # projects, routers, users: nothing rendered depends on them.
