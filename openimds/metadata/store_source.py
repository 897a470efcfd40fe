"""`StoreSource`: instance views from the inventory, cached until the change feed says otherwise.

* A view is loaded on first use (one read transaction, off the event loop) and then served from
  memory: a cache hit does no query. Concurrent misses for one instance share one load, a task
  of its own (single flight: no request cancels it, none starts a second one).
* Views are also loaded ahead of their first request: an instance the feed shows created or
  changed (or a compute port given its device id) is queued for a background load, one at a
  time, so a boot's first request is usually a cache hit and a storm of first requests does
  not queue behind a storm of loads.
* A view the feed dropped is reloaded in the background (above) and its requests join that one
  load; they are never answered from before the change (metadata options such as
  `http_endpoint = disabled` take effect at their revision). The last view is kept, though,
  and served when the reload cannot reach the database; an instance never loaded has none:
  503 with Retry-After then.
* A watcher task follows `Store.changes_since` from the revision read at start-up and drops
  every cached view the change can affect: the instance itself; its ports (including a port
  newly given its device id); the subnets and networks it sits on, and DHCP ports there (they
  decide `dhcp_server` and the MTU); and its key pair.
* Loads and invalidations race safely through epochs: a load stores its result only if nothing
  touching that instance (one of the ports it read, or any subnet/network/key pair) was
  invalidated while it ran, so a change applied mid-load can never be overwritten by the older
  read.
* Direct-mode address lookups are cached the same way, keyed by IP and dropped per port.

Nothing here is a TTL: correctness comes from the feed. `applied_revision` says how far the
feed has been applied; `wait_for_revision` lets callers (and tests) wait for a given commit.

When the database is away, cached (and last-known) views keep being served; whatever needs the
database (a first load, the password POST, provider and direct-mode lookups) raises `Unavailable` (503 with
Retry-After), never a bare exception. The outage is logged as one WARNING when it starts and one
when it ends (`Availability`), not per request. The source may even start with the database
down: it answers 503 until it has read the current revision (views loaded before that could
miss changes, so none are).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openimds.feed import ChangeRecord, Kind
from openimds.inventory.errors import ChangesPruned, StoreUnavailable
from openimds.inventory.models import (
    FixedIP,
    Instance,
    KeyPair,
    Network,
    Port,
    SecurityGroup,
    Subnet,
)
from openimds.inventory.store import Store
from openimds.metadata.errors import Unavailable
from openimds.metadata.source import AddressMatch, PasswordResult
from openimds.metadata.view import FixedIPView, InstanceView, KeyPairView, PortView, SubnetView
from openimds.wire import DHCP_OWNER, ROUTER_INTERFACE_OWNERS

__all__ = ["Availability", "StoreSource", "load_view"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")
# What a database that is down, restarting or unreachable raises through the Store.
DATABASE_DOWN = (
    StoreUnavailable,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
# Seconds a guest is asked to wait (Retry-After) while the inventory is unreachable.
RETRY_AFTER = 5
GONE_STATUSES = ("DELETED", "SOFT_DELETED")


# ---- loading (runs in a worker thread) ------------------------------------------------------


@dataclass
class _Deps:
    """What a loaded view was rendered from, for invalidation."""

    ports: set[str] = field(default_factory=set)
    subnets: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    keypair: tuple[str | None, str] | None = None
    # DHCP servers read for networks that were not in the caller's DHCP cache.
    dhcp: dict[str, DhcpServers] = field(default_factory=dict)


@dataclass(frozen=True)
class DhcpServers:
    """The `network:dhcp` ports of one network: first address per subnet, and their ids."""

    by_subnet: dict[str, str]
    port_ids: frozenset[str]


def load_dhcp_servers(session: Session, network_id: str) -> DhcpServers:
    # By network (indexed), not by subnet: fixed_ips.subnet_id has no index of its own, and
    # scanning every fixed IP per miss made a 10,000-instance cold start take minutes.
    rows = session.execute(
        select(FixedIP.subnet_id, FixedIP.ip_address, Port.id)
        .join(FixedIP, FixedIP.port_id == Port.id)
        .where(Port.network_id == network_id, Port.device_owner == DHCP_OWNER)
        .order_by(FixedIP.id)
    )
    by_subnet: dict[str, str] = {}
    port_ids: set[str] = set()
    for subnet_id, ip, port_id in rows:
        by_subnet.setdefault(subnet_id, ip)
        port_ids.add(port_id)
    return DhcpServers(by_subnet, frozenset(port_ids))


def _subnet_view(subnet: Subnet, dhcp_server: str | None) -> SubnetView:
    return SubnetView(
        id=subnet.id,
        cidr=subnet.cidr,
        ip_version=subnet.ip_version,
        gateway_ip=subnet.gateway_ip,
        host_routes=tuple((r["destination"], r["nexthop"]) for r in subnet.host_routes or ()),
        dns_nameservers=tuple(subnet.dns_nameservers or ()),
        enable_dhcp=bool(subnet.enable_dhcp),
        ipv6_ra_mode=subnet.ipv6_ra_mode,
        ipv6_address_mode=subnet.ipv6_address_mode,
        dhcp_server=dhcp_server,
    )


def load_view(
    session: Session, uuid: str, dhcp_cache: Mapping[str, DhcpServers] | None = None
) -> tuple[InstanceView, _Deps] | None:
    """Read one instance and everything its trees show, or None if it does not exist.

    `dhcp_cache` holds DHCP servers already known per network; the ones read here are
    returned in `_Deps.dhcp` for the caller to cache.
    """
    inst = session.scalar(
        select(Instance).options(selectinload(Instance.image)).where(Instance.uuid == uuid)
    )
    if inst is None or inst.status in GONE_STATUSES:
        return None
    deps = _Deps()
    ports = session.scalars(
        select(Port)
        .options(selectinload(Port.fixed_ips))
        .where(Port.device_id == uuid)
        # Only the instance's own project's ports: anyone else's port naming this instance as
        # its device must not add links, routes or DNS servers to its trees.
        .where(Port.project_id == inst.project_id)
        # Attach order stands in for nova's VIF order.
        .order_by(Port.created_at, Port.id)
    ).all()
    subnet_ids = {fip.subnet_id for p in ports for fip in p.fixed_ips}
    network_ids = {p.network_id for p in ports}
    subnets = (
        {s.id: s for s in session.scalars(select(Subnet).where(Subnet.id.in_(subnet_ids)))}
        if subnet_ids
        else {}
    )
    mtus = (
        {
            row[0]: row[1]
            for row in session.execute(
                select(Network.id, Network.mtu).where(Network.id.in_(network_ids))
            )
        }
        if network_ids
        else {}
    )
    dhcp_servers: dict[str, str] = {}
    for network_id in sorted(network_ids):
        known = (dhcp_cache or {}).get(network_id)
        if known is None:
            known = deps.dhcp[network_id] = load_dhcp_servers(session, network_id)
        dhcp_servers.update(known.by_subnet)
    port_views = []
    for port in ports:
        fixed = tuple(
            FixedIPView(
                fip.ip_address,
                _subnet_view(subnets[fip.subnet_id], dhcp_servers.get(fip.subnet_id)),
            )
            for fip in port.fixed_ips
            if fip.subnet_id in subnets
        )
        port_views.append(
            PortView(
                id=port.id,
                mac_address=port.mac_address,
                network_id=port.network_id,
                mtu=mtus.get(port.network_id),
                fixed_ips=fixed,
            )
        )
        deps.ports.add(port.id)
    deps.subnets = set(subnet_ids)
    deps.networks = set(network_ids)
    keypair = None
    if inst.key_name:
        deps.keypair = (inst.user_id, inst.key_name)
        query = select(KeyPair).where(KeyPair.name == inst.key_name)
        query = query.where(
            KeyPair.user_id == inst.user_id
            if inst.user_id
            else KeyPair.project_id == inst.project_id
        )
        record = session.scalars(query.order_by(KeyPair.id)).first()
        if record is not None:
            keypair = KeyPairView(record.name, record.public_key, record.type or "ssh")
    group_names = tuple(inst.security_groups or ())
    group_ids: dict[str, str] = {}
    if group_names:
        for group in session.scalars(select(SecurityGroup).where(
                SecurityGroup.project_id == inst.project_id,
                SecurityGroup.name.in_(group_names)).order_by(SecurityGroup.created_at)):
            group_ids.setdefault(group.name, group.id)
    image = inst.image
    view = InstanceView(
        uuid=inst.uuid,
        ec2_id=inst.id,
        name=inst.name,
        hostname=inst.hostname,
        project_id=inst.project_id,
        availability_zone=inst.availability_zone,
        flavor=inst.flavor,
        image_name=image.name if image is not None else None,
        image_ec2_id=image.id if image is not None else None,
        image_uuid=image.uuid if image is not None else None,
        key_name=inst.key_name,
        key_data=inst.key_data,
        keypair=keypair,
        user_data=inst.user_data,
        metadata={str(k): v for k, v in (inst.properties or {}).items()},
        launch_index=inst.launch_index,
        reservation_id=inst.reservation_id,
        security_groups=group_names,
        security_group_ids=tuple(group_ids[n] for n in group_names if n in group_ids),
        created_at=inst.created_at,
        password=inst.password or None,
        ports=tuple(port_views),
        metadata_options=dict(inst.metadata_options or {}),
    )
    return view, deps


@dataclass(frozen=True)
class _PortFacts:
    """A changed port as it is now (None fields when it was deleted)."""

    port_id: str
    device_id: str | None
    device_owner: str | None
    network_id: str | None
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class _KeyFacts:
    keypair_id: str
    user_id: str | None
    name: str | None


class Availability:
    """Whether the inventory answered last time: one log line per change, never per request."""

    def __init__(self, what: str = "inventory database") -> None:
        self.what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            LOG.warning("%s unavailable (%s: %s); serving cached documents, answering 503 for "
                        "the rest until it is back", self.what, type(exc).__name__,
                        _one_line(exc))

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            LOG.warning("%s available again", self.what)


def _one_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "orig", None) or cause).strip()
    return text.splitlines()[0][:200] if text else type(cause).__name__


# ---- the source ------------------------------------------------------------------------------


class StoreSource:
    """See the module docstring. Create it and call `start()` on the serving event loop."""

    def __init__(
        self,
        store: Store,
        *,
        on_cache: Callable[[str, bool], None] | None = None,
        feed_timeout: float = 10.0,
        prefetch: bool = True,
    ) -> None:
        self.store = store
        self._on_cache = on_cache
        self._feed_timeout = feed_timeout
        self._views: dict[str, InstanceView] = {}
        self._deps: dict[str, _Deps] = {}
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
        self._loading: dict[str, asyncio.Task[InstanceView | None]] = {}
        # The last view cached per instance, kept when the feed drops it: served when its
        # reload cannot reach the database.
        self._last: dict[str, InstanceView] = {}
        # Instances the feed created or changed, loaded in the background one at a time so
        # their next request (a boot's first) is a cache hit; insertion-ordered, value = tries.
        self._prefetch_enabled = prefetch
        self._prefetch: dict[str, int] = {}
        self._prefetch_wake: asyncio.Event | None = None
        self._prefetcher: asyncio.Task[None] | None = None
        self._addresses: dict[str, list[AddressMatch]] = {}
        self._address_ports: dict[str, set[str]] = defaultdict(set)  # port id -> ips cached
        self._address_epoch = 0
        self._dhcp: dict[str, DhcpServers] = {}
        self._dhcp_port_network: dict[str, str] = {}
        self._dhcp_epoch = 0
        self.applied_revision = -1
        self._revision_event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.availability = Availability()
        self._forget_listeners: list[Callable[[str], None]] = []

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the current revision and start following the feed. With the database down this
        still returns: the feed task keeps trying, and requests get 503 until it succeeds."""
        self._revision_event = asyncio.Event()
        try:
            self.applied_revision = await asyncio.to_thread(self.store.current_revision)
        except DATABASE_DOWN as exc:
            self.availability.failed(exc)
        self._task = asyncio.create_task(self._watch(), name="metadata-change-feed")
        if self._prefetch_enabled:
            self._prefetch_wake = asyncio.Event()
            self._prefetcher = asyncio.create_task(self._prefetch_forever(),
                                                   name="metadata-view-prefetch")

    async def stop(self) -> None:
        self._stopping = True
        for background in (self._task, self._prefetcher):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)

    def ready(self) -> bool:
        return self.applied_revision >= 0 and self._task is not None and not self._task.done()

    async def wait_for_revision(self, revision: int, timeout: float = 10.0) -> None:
        """Return once every change up to `revision` has been applied to the caches."""
        assert self._revision_event is not None, "start() first"
        async with asyncio.timeout(timeout):
            while self.applied_revision < revision:
                self._revision_event.clear()
                await self._revision_event.wait()

    # ---- InstanceSource ----------------------------------------------------------------------
    async def _query(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread, turning a database outage into `Unavailable`."""
        if self.applied_revision < 0:
            raise Unavailable(
                "The metadata service is starting and cannot reach its inventory yet; "
                "please try again shortly.", retry_after=RETRY_AFTER)
        try:
            result = await asyncio.to_thread(fn, *args)
        except DATABASE_DOWN as exc:
            self.availability.failed(exc)
            raise Unavailable(retry_after=RETRY_AFTER) from exc
        self.availability.succeeded()
        return result

    def cached_view(self, uuid: str) -> InstanceView | None:
        """The view a request would be served now without waiting, or None (CachedViews).

        Only the current cached view: not the last view of one the feed dropped (requests for
        it wait for its reload), so nothing kept from it outlives the change."""
        return self._views.get(uuid)

    def add_forget_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(uuid)` whenever that instance's cached view is dropped (CachedViews)."""
        self._forget_listeners.append(listener)

    def _hit(self, kind: str, hit: bool) -> None:
        if self._on_cache is not None:
            self._on_cache(kind, hit)

    async def view_for_instance(self, uuid: str) -> InstanceView | None:
        view = self._views.get(uuid)
        if view is not None:
            self._hit("view", True)
            return view
        task = self._loading.get(uuid)
        if task is None:
            self._hit("view", False)
            task = self._start_load(uuid)
        last = self._last.get(uuid)
        if last is None:
            # Nothing known yet: wait for the load (Unavailable when the database is away).
            return await asyncio.shield(task)
        # A view the feed dropped: the fresh one, as soon as its one load is done (a change is
        # visible once its revision is applied: metadata options such as http_endpoint =
        # disabled must never be answered from before). Only when that load cannot reach the
        # database is the last view served (the degraded mode's promise), never a 503.
        try:
            return await asyncio.shield(task)
        except Unavailable:
            return last

    def _start_load(self, uuid: str) -> asyncio.Task[InstanceView | None]:
        # The load is a task of its own, not the first requester's: one load per instance
        # however many requests ask (single flight), and a request that gives up (a
        # disconnect) never cancels it.
        task = asyncio.create_task(self._reload(uuid), name=f"metadata-view-{uuid}")
        # Its failure is seen by whoever waits; a background load may have no waiter.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._loading[uuid] = task
        return task

    def _want(self, uuid: str | None) -> None:
        """Load `uuid`'s view in the background (it was created or changed)."""
        if uuid and self._prefetch_wake is not None and uuid not in self._prefetch:
            self._prefetch[uuid] = 0
            self._prefetch_wake.set()

    async def _prefetch_forever(self) -> None:
        """One background load at a time, so requests' own loads never queue behind many.
        A load that a later change overtook is not cached; it is tried again (3 times)."""
        assert self._prefetch_wake is not None
        while True:
            if not self._prefetch:
                self._prefetch_wake.clear()
                await self._prefetch_wake.wait()
                continue
            uuid = next(iter(self._prefetch))
            tries = self._prefetch.pop(uuid)
            if uuid in self._views or self.applied_revision < 0:
                continue
            task = self._loading.get(uuid) or self._start_load(uuid)
            try:
                view = await asyncio.shield(task)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the first request will load it
                continue
            if view is not None and uuid not in self._views and tries < 2:
                self._prefetch.setdefault(uuid, tries + 1)

    async def _reload(self, uuid: str) -> InstanceView | None:
        epochs = (self._epoch[uuid], self._global_epoch)
        port_changes = self._port_changes
        dhcp_epoch = self._dhcp_epoch
        try:
            loaded = await self._query(self._load, uuid, dict(self._dhcp))
        finally:
            self._loading.pop(uuid, None)
        if loaded is None:
            self._last.pop(uuid, None)  # gone: nothing to fall back on any more
            return None
        view, deps = loaded
        if dhcp_epoch == self._dhcp_epoch:
            for network_id, servers in deps.dhcp.items():
                self._dhcp[network_id] = servers
                for port_id in servers.port_ids:
                    self._dhcp_port_network[port_id] = network_id
        # Only a view still current when it arrives is cached, and so becomes the last view:
        # one that a change overtook may miss that change (a port attached meanwhile).
        overtaken = any(self._port_changed.get(p, 0) > port_changes for p in deps.ports)
        if epochs == (self._epoch[uuid], self._global_epoch) and not overtaken:
            self._remember(view, deps)
        return view

    def _load(
        self, uuid: str, dhcp: Mapping[str, DhcpServers]
    ) -> tuple[InstanceView, _Deps] | None:
        with self.store.read() as session:
            return load_view(session, uuid, dhcp)

    def _remember(self, view: InstanceView, deps: _Deps) -> None:
        uuid = view.uuid
        self._views[uuid] = view
        self._last[uuid] = view
        self._deps[uuid] = deps
        for port in deps.ports:
            self._by_port[port].add(uuid)
        for subnet in deps.subnets:
            self._by_subnet[subnet].add(uuid)
        for network in deps.networks:
            self._by_network[network].add(uuid)
        if deps.keypair is not None:
            self._by_key[deps.keypair].add(uuid)

    def _forget(self, uuid: str) -> None:
        self._epoch[uuid] += 1
        self._views.pop(uuid, None)
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

    async def ports_for_address(self, address: str) -> list[AddressMatch]:
        cached = self._addresses.get(address)
        if cached is not None:
            self._hit("address", True)
            return cached
        self._hit("address", False)
        epoch = self._address_epoch
        found, port_ids = await self._query(self._load_address, address)
        if epoch == self._address_epoch:
            self._addresses[address] = found
            for port_id in port_ids:
                self._address_ports[port_id].add(address)
        return found

    def _load_address(self, address: str) -> tuple[list[AddressMatch], set[str]]:
        with self.store.read() as session:
            rows = list(
                session.execute(
                    select(Port.id, Port.network_id, Port.device_id, Port.project_id)
                    .join(FixedIP, FixedIP.port_id == Port.id)
                    .where(FixedIP.ip_address == address)
                    .order_by(Port.id)
                )
            )
        # Ports without a device (and the routers' and DHCP's own) do not identify an instance,
        # but their ids are kept so a later device assignment invalidates this entry.
        matches = [
            AddressMatch(port_id, network_id, device_id, project_id)
            for port_id, network_id, device_id, project_id in rows
            if device_id
        ]
        return matches, {row[0] for row in rows}

    async def ports_for_provider(self, provider: str, address: str) -> list[AddressMatch] | None:
        # Providers are not cached: the mode is rare and its lookups are two indexed queries.
        return await self._query(self._load_provider, provider, address)

    def _load_provider(self, provider: str, address: str) -> list[AddressMatch] | None:
        """A provider serves the network whose id it is, or the networks of the router whose
        id it is (the inventory has no `advanced_service_providers`)."""
        with self.store.read() as session:
            networks = set(session.scalars(select(Network.id).where(Network.id == provider)))
            networks |= set(
                session.scalars(
                    select(Port.network_id).where(
                        Port.device_id == provider, Port.device_owner.in_(ROUTER_INTERFACE_OWNERS)
                    )
                )
            )
            has_subnets = networks and session.scalar(
                select(Subnet.id).where(Subnet.network_id.in_(networks)).limit(1)
            )
            if not has_subnets:
                return None
            rows = session.execute(
                select(Port.id, Port.network_id, Port.device_id, Port.project_id)
                .join(FixedIP, FixedIP.port_id == Port.id)
                .where(FixedIP.ip_address == address, Port.network_id.in_(networks))
            )
            return [AddressMatch(*row) for row in rows]

    async def set_password(self, uuid: str, password: str) -> PasswordResult:
        result = await self._query(self._set_password, uuid, password)
        # Do not wait for the feed: the guest's next GET must see its own write. The cached
        # view is kept with the password the database now holds (no reload needed, so the
        # instance stays served through a database outage); the feed's record of this write
        # drops it as usual, as it drops anything else changed meanwhile.
        cached = self._views.get(uuid)
        deps = self._deps.get(uuid)
        last = self._last.get(uuid)
        self._forget(uuid)
        if result is PasswordResult.SET and cached is not None and deps is not None:
            self._remember(replace(cached, password=password), deps)
        elif result is PasswordResult.SET and last is not None:
            # The feed dropped the view first (its record of this write came back before we
            # did): the last view, served if the database goes away before the reload, must
            # still refuse a second password.
            self._last[uuid] = replace(last, password=password)
        return result

    def _set_password(self, uuid: str, password: str) -> PasswordResult:
        with self.store.session() as session:
            inst = session.scalar(select(Instance).where(Instance.uuid == uuid).with_for_update())
            if inst is None or inst.status in GONE_STATUSES:
                return PasswordResult.NOT_FOUND
            # Checked under the row lock (BEGIN IMMEDIATE on SQLite): write-once for real,
            # unlike nova's check against a possibly stale cache.
            if inst.password:
                return PasswordResult.ALREADY_SET
            inst.password = password
            return PasswordResult.SET

    # ---- the change feed -----------------------------------------------------------------------
    def _read_changes(
        self, revision: int
    ) -> tuple[list[ChangeRecord], list[_PortFacts], list[_KeyFacts]]:
        changes = self.store.changes_since(revision, timeout=self._feed_timeout)
        port_ids = {c.resource_id for c in changes if c.resource == Kind.PORT}
        key_ids = {c.resource_id for c in changes if c.resource == Kind.KEYPAIR}
        ports: list[_PortFacts] = []
        keys: list[_KeyFacts] = []
        if port_ids or key_ids:
            with self.store.read() as session:
                found: dict[str, _PortFacts] = {}
                if port_ids:
                    for port in session.scalars(
                        select(Port)
                        .options(selectinload(Port.fixed_ips))
                        .where(Port.id.in_(port_ids))
                    ):
                        found[port.id] = _PortFacts(
                            port.id,
                            port.device_id,
                            port.device_owner,
                            port.network_id,
                            tuple(f.ip_address for f in port.fixed_ips),
                        )
                ports = [
                    found.get(pid) or _PortFacts(pid, None, None, None, ()) for pid in port_ids
                ]
                int_ids = [int(k) for k in key_ids if k.isdigit()]
                records = (
                    {
                        str(k.id): k
                        for k in session.scalars(select(KeyPair).where(KeyPair.id.in_(int_ids)))
                    }
                    if int_ids
                    else {}
                )
                for kid in key_ids:
                    rec = records.get(kid)
                    keys.append(
                        _KeyFacts(kid, rec.user_id if rec else None, rec.name if rec else None)
                    )
        return changes, ports, keys

    def drop_all(self) -> None:
        """Forget every cached view, address and DHCP fact (the feed lost continuity)."""
        for uuid in list(self._views) + list(self._deps):
            self._forget(uuid)
        self._addresses.clear()
        self._address_ports.clear()
        self._address_epoch += 1
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
            self._forget(uuid)
        self._global_epoch += 1

    def _drop_addresses(self, port_id: str, addresses: Iterable[str]) -> None:
        self._address_epoch += 1
        for ip in self._address_ports.pop(port_id, set()) | set(addresses):
            self._addresses.pop(ip, None)

    def apply(
        self, changes: list[ChangeRecord], ports: list[_PortFacts], keys: list[_KeyFacts]
    ) -> None:
        """Invalidate what `changes` can affect (the facts are the changed rows as they are now)."""
        port_facts = {p.port_id: p for p in ports}
        key_facts = {k.keypair_id: k for k in keys}
        for change in changes:
            rid = change.resource_id
            if change.resource == Kind.INSTANCE:
                # Address matches hold only port facts, so they stay valid.
                self._forget(rid)
                if change.op == "delete":
                    self._last.pop(rid, None)
                    self._prefetch.pop(rid, None)
                else:
                    self._want(rid)
            elif change.resource == Kind.PORT:
                facts = port_facts.get(rid) or _PortFacts(rid, None, None, None, ())
                # The previous owner of a re-assigned port may be loading right now: its load
                # read this port, so it is not kept (`_reload`). The new owner's epoch moves
                # below.
                self._port_changes += 1
                self._port_changed[rid] = self._port_changes
                for uuid in list(self._by_port.get(rid, ())):
                    self._forget(uuid)
                if facts.device_id:
                    self._forget(facts.device_id)
                    if not facts.device_owner or facts.device_owner.startswith("compute:"):
                        self._want(facts.device_id)
                dhcp_networks = {self._dhcp_port_network.get(rid)}
                if facts.device_owner == DHCP_OWNER:
                    dhcp_networks.add(facts.network_id)
                for network_id in dhcp_networks - {None}:
                    assert network_id is not None
                    self._drop_dhcp(network_id)
                self._drop_addresses(rid, facts.addresses)
            elif change.resource == Kind.SUBNET:
                for uuid in list(self._by_subnet.get(rid, ())):
                    self._forget(uuid)
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
                    self._forget(uuid)
                self._global_epoch += 1
            # projects, routers, users: nothing rendered depends on them.

    async def _watch(self) -> None:
        assert self._revision_event is not None
        while not self._stopping:
            try:
                if self.applied_revision < 0:
                    # Started with the database away: nothing is served until this succeeds.
                    self.applied_revision = await asyncio.to_thread(self.store.current_revision)
                    self.availability.succeeded()
                    self._revision_event.set()
                    continue
                changes, ports, keys = await asyncio.to_thread(
                    self._read_changes, self.applied_revision
                )
            except asyncio.CancelledError:
                raise
            except ChangesPruned as exc:
                # We fell behind the feed's retention: we cannot know what changed, so nothing
                # cached can be trusted. Read the head first, then drop everything: views loaded
                # from now on are at least as new as that head, and later changes follow it.
                LOG.warning("change feed pruned past revision %d; dropping every cached "
                            "document", exc.since)
                try:
                    head = await asyncio.to_thread(self.store.current_revision)
                except Exception as read_exc:
                    self.availability.failed(read_exc)
                    await asyncio.sleep(1.0)
                    continue
                self.drop_all()
                self.applied_revision = max(self.applied_revision, head)
                self._revision_event.set()
                continue
            except Exception as exc:
                # Keep serving what is cached: the feed resumes from applied_revision, so every
                # change committed meanwhile still invalidates its views once it can be read.
                # (A view loaded meanwhile is as new as the database it came from.)
                self.availability.failed(exc)
                await asyncio.sleep(1.0)
                continue
            self.availability.succeeded()
            if not changes:
                continue
            try:
                self.apply(changes, ports, keys)
            except Exception:
                # A bug in invalidation must not stop the feed for good (guests would then be
                # served views that are never refreshed again): trust nothing cached, go on.
                LOG.exception("could not apply changes up to revision %d; dropping every "
                              "cached document", changes[-1].revision)
                self.drop_all()
            self.applied_revision = changes[-1].revision
            self._revision_event.set()
