"""`StoreSource`: instance views from the inventory, cached until the change feed says otherwise.

Three files: the queries (store_queries.py, the only one importing SQLAlchemy: sessions in,
plain records out), the cache and its epochs (view_cache.py: plain records in, no I/O), and
this one, which runs them: loads in worker threads, single flight, the prefetcher, and the
watcher following the feed.

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
* A watcher task (supervised: restarted with backoff if it ever ends, and the source is not
  ready meanwhile) follows `Store.changes_since` from the revision read at start-up and drops
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
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from openimds import runtime
from openimds.feed import ChangeRecord, Kind
from openimds.inventory.errors import ChangesPruned
from openimds.inventory.store import Store
from openimds.metadata import store_queries as queries
from openimds.metadata.errors import Unavailable
from openimds.metadata.source import AddressMatch, PasswordResult
from openimds.metadata.store_queries import DATABASE_DOWN
from openimds.metadata.view import InstanceView
from openimds.metadata.view_cache import Deps, DhcpServers, KeyFacts, PortFacts, ViewCache

__all__ = ["Availability", "StoreSource"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds a guest is asked to wait (Retry-After) while the inventory is unreachable.
RETRY_AFTER = 5


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
        # What is cached, and the epochs deciding whether a load may be kept (view_cache.py).
        self.cache = ViewCache(prefetch=prefetch, on_want=self._wake_prefetcher)
        self._loading: dict[str, asyncio.Task[InstanceView | None]] = {}
        self._prefetch_enabled = prefetch
        self._prefetch_wake: asyncio.Event | None = None
        self._prefetcher: runtime.SupervisedTask | None = None
        self._prefetch_listeners: list[Callable[[InstanceView], Awaitable[None]]] = []
        self.applied_revision = -1
        self._revision_event: asyncio.Event | None = None
        # The feed watcher: restarted with backoff should it ever end (runtime.py); while it is
        # down nothing cached would be invalidated, so the source is not ready.
        self._watcher = runtime.SupervisedTask(self._watch, name="metadata-change-feed")
        self._stopping = False
        self.availability = Availability()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the current revision and start following the feed. With the database down this
        still returns: the feed task keeps trying, and requests get 503 until it succeeds."""
        self._revision_event = asyncio.Event()
        try:
            self.applied_revision = await asyncio.to_thread(self.store.current_revision)
        except DATABASE_DOWN as exc:
            self.availability.failed(exc)
        self._watcher.start()
        if self._prefetch_enabled:
            self._prefetch_wake = asyncio.Event()
            self._prefetcher = runtime.SupervisedTask(self._prefetch_forever,
                                                      name="metadata-view-prefetch")
            self._prefetcher.start()

    async def stop(self) -> None:
        self._stopping = True
        for background in (self._watcher, self._prefetcher):
            if background is not None:
                await background.stop()
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)

    def ready(self) -> bool:
        return self.applied_revision >= 0 and self._watcher.running

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

    def _wake_prefetcher(self) -> None:
        if self._prefetch_wake is not None:
            self._prefetch_wake.set()

    def cached_view(self, uuid: str) -> InstanceView | None:
        """The view a request would be served now without waiting, or None (CachedViews).

        Only the current cached view: not the last view of one the feed dropped (requests for
        it wait for its reload), so nothing kept from it outlives the change."""
        return self.cache.views.get(uuid)

    def add_forget_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(uuid)` whenever that instance's cached view is dropped (CachedViews)."""
        self.cache.add_forget_listener(listener)

    def add_prefetch_listener(self, listener: Callable[[InstanceView], Awaitable[None]]) -> None:
        """Await `listener(view)` for each view the prefetcher loaded and cached ahead of its
        first request (answers rendered ahead: fastserver.py), one at a time."""
        self._prefetch_listeners.append(listener)

    def _hit(self, kind: str, hit: bool) -> None:
        if self._on_cache is not None:
            self._on_cache(kind, hit)

    async def view_for_instance(self, uuid: str) -> InstanceView | None:
        view = self.cache.views.get(uuid)
        if view is not None:
            self._hit("view", True)
            return view
        task = self._loading.get(uuid)
        if task is None:
            self._hit("view", False)
            task = self._start_load(uuid)
        last = self.cache.last.get(uuid)
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

    async def _prefetch_forever(self) -> None:
        """One background load at a time, so requests' own loads never queue behind many.
        A load that a later change overtook is not cached; it is tried again (3 times)."""
        assert self._prefetch_wake is not None
        wanted = self.cache.wanted
        while True:
            if not wanted:
                self._prefetch_wake.clear()
                await self._prefetch_wake.wait()
                continue
            uuid = next(iter(wanted))
            tries = wanted.pop(uuid)
            if uuid in self.cache.views or self.applied_revision < 0:
                continue
            task = self._loading.get(uuid) or self._start_load(uuid)
            try:
                view = await asyncio.shield(task)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the first request will load it
                continue
            if view is not None and uuid not in self.cache.views and tries < 2:
                wanted.setdefault(uuid, tries + 1)
            elif view is not None and self.cache.views.get(uuid) is view:
                for listener in self._prefetch_listeners:
                    try:
                        await listener(view)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug there must not stop the prefetcher
                        LOG.exception("prefetch listener failed for instance %s", uuid)

    async def _reload(self, uuid: str) -> InstanceView | None:
        ticket = self.cache.begin_load(uuid)
        try:
            loaded = await self._query(self._load, uuid, self.cache.dhcp_known())
        finally:
            self._loading.pop(uuid, None)
        return self.cache.finish_load(ticket, loaded)

    def _load(
        self, uuid: str, dhcp: Mapping[str, DhcpServers]
    ) -> tuple[InstanceView, Deps] | None:
        with self.store.read() as session:
            return queries.load_view(session, uuid, dhcp)

    async def ports_for_address(self, address: str) -> list[AddressMatch]:
        cached = self.cache.address(address)
        if cached is not None:
            self._hit("address", True)
            return cached
        self._hit("address", False)
        epoch = self.cache.address_epoch
        found, port_ids = await self._query(self._load_address, address)
        self.cache.keep_address(epoch, address, found, port_ids)
        return found

    def _load_address(self, address: str) -> tuple[list[AddressMatch], set[str]]:
        with self.store.read() as session:
            return queries.address_matches(session, address)

    async def ports_for_provider(self, provider: str, address: str) -> list[AddressMatch] | None:
        # Providers are not cached: the mode is rare and its lookups are two indexed queries.
        return await self._query(self._load_provider, provider, address)

    def _load_provider(self, provider: str, address: str) -> list[AddressMatch] | None:
        with self.store.read() as session:
            return queries.provider_matches(session, provider, address)

    async def set_password(self, uuid: str, password: str) -> PasswordResult:
        result = await self._query(self._set_password, uuid, password)
        # Do not wait for the feed: the guest's next GET must see its own write.
        self.cache.password_written(uuid, password, result)
        return result

    def _set_password(self, uuid: str, password: str) -> PasswordResult:
        with self.store.session() as session:
            return queries.write_password(session, uuid, password)

    # ---- the change feed -----------------------------------------------------------------------
    def _read_changes(
        self, revision: int
    ) -> tuple[list[ChangeRecord], list[PortFacts], list[KeyFacts]]:
        changes = self.store.changes_since(revision, timeout=self._feed_timeout)
        port_ids = {c.resource_id for c in changes if c.resource == Kind.PORT}
        key_ids = {c.resource_id for c in changes if c.resource == Kind.KEYPAIR}
        if not (port_ids or key_ids):
            return changes, [], []
        with self.store.read() as session:
            ports, keys = queries.changed_facts(session, port_ids, key_ids)
        return changes, ports, keys

    def drop_all(self) -> None:
        """Forget every cached view, address and DHCP fact (the feed lost continuity)."""
        self.cache.drop_all()

    def apply(
        self, changes: list[ChangeRecord], ports: list[PortFacts], keys: list[KeyFacts]
    ) -> None:
        """Invalidate what `changes` can affect (the facts are the changed rows as they are now)."""
        self.cache.apply(changes, ports, keys)

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
