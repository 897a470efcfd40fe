"""Keeping the PortIndex current: a full listing at revision N, then the change feed from N.

    InventoryFeed              the change feed (`openimds.feed.ChangeFeed`): `ControlFeed`
                               over the control-plane API, `MemoryFeed` in tests and demos.
    IndexSync                  the loop: listing -> watch -> apply, with backoff and resync.

Change records name a resource, not its new state, so every record is handled the same way
(level-triggered): refetch what it names and put that state into the index, or remove it when
the control plane says it is gone. A port record refetches the port; an instance record refetches
the ports bound to it; a router record refreshes the router set (its networks follow from its
interface ports, which have their own records). A large burst, a reported gap or a reconnect after
an outage runs a full resync instead, so a missed event can never leave a stale entry.

Before the first sync `ready` is unset (the server answers 503). After it, an outage of the
control plane leaves the index as it was: the agent keeps answering from it and resynchronises
when the control plane is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from openimds.agent.index import (
    IndexChange,
    PortEntry,
    PortIndex,
    PortRemoved,
    PortUpsert,
    RouterRemoved,
    RouterUpsert,
)
from openimds.feed import (
    Backoff,
    ChangeBatch,
    ChangeFeed,
    ChangeRecord,
    FeedError,
    FeedGap,
    FeedUnavailable,
    Kind,
    Listing,
    ListSpec,
)
from openimds.rows import compact_row

__all__ = [
    "INDEX_FIELDS",
    "Backoff",
    "ChangeBatch",
    "ChangeRecord",
    "FeedError",
    "FeedGap",
    "FeedUnavailable",
    "IndexSync",
    "InventoryFeed",
    "Snapshot",
]

LOG = logging.getLogger("openimds.agent.feed")

# The names this package has always exported, for the feed's own types.
InventoryFeed = ChangeFeed
Snapshot = Listing

# The port attributes PortEntry.from_api reads: all the index keeps of a port.
INDEX_FIELDS = ("id", "network_id", "mac_address", "fixed_ips", "device_id", "device_owner",
                "project_id", "tenant_id", "binding:host_id")


def _index_entry(port: Mapping[str, Any]) -> PortEntry | Mapping[str, Any]:
    """A listed port as the index keeps it; one it cannot read stays as it came (the index
    sync logs and skips it)."""
    try:
        return PortEntry.from_api(port)
    except (KeyError, TypeError):
        return compact_row({k: port[k] for k in INDEX_FIELDS if k in port})


# What the index lists: only the port attributes it reads, made into index entries page by
# page (100k whole ports as dicts were ~250 MB), and the routers (their ids).
INDEX_LISTING = {Kind.PORT: ListSpec(fields=INDEX_FIELDS, each=_index_entry),
                 Kind.ROUTER: ListSpec()}


class IndexSync:
    """Runs forever (until cancelled), keeping `index` equal to the control plane's ports."""

    def __init__(self, feed: InventoryFeed, index: PortIndex, *, poll_timeout: float = 30.0,
                 backoff: Backoff | None = None, resync_over: int = 500) -> None:
        self.feed = feed
        self.index = index
        self.poll_timeout = poll_timeout
        self.backoff = backoff or Backoff()
        # Past this many records in one batch, one listing is cheaper than one GET per record.
        self.resync_over = resync_over
        self.ready = asyncio.Event()
        self.connected = False
        # Told which networks each applied change touched (None: a full listing replaced
        # everything), after the index holds it: map mode's MapKeeper.changed.
        self.on_change: Callable[[set[str] | None], None] | None = None

    async def run(self) -> None:
        outage_logged = False
        while True:
            try:
                await self.full_sync()
                if outage_logged:
                    LOG.info("control plane reachable again; index resynchronised at revision %d "
                             "(%d ports)", self.index.revision, len(self.index))
                outage_logged = False
                self.backoff.reset()
                while True:
                    batch = await self.feed.changes(self.index.revision, self.poll_timeout)
                    await self.apply_batch(batch)
            except FeedGap as exc:
                LOG.warning("change feed gap (%s); resynchronising", exc)
            except FeedUnavailable as exc:
                self.connected = False
                delay = self.backoff.next_delay()
                if not outage_logged:
                    state = (f"serving from the index at revision {self.index.revision}"
                             if self.ready.is_set() else "answering 503 until the first sync")
                    LOG.warning("control plane unavailable (%s); %s; retrying with backoff",
                                exc, state)
                    outage_logged = True
                else:
                    LOG.debug("control plane still unavailable (%s); next try in %.1fs",
                              exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                # A malformed answer or a bug in a refetch must not stop the agent serving
                # from what it has: log it, back off, and start over with a full listing.
                self.connected = False
                LOG.exception("index sync failed unexpectedly; resynchronising")
                await asyncio.sleep(self.backoff.next_delay())

    async def full_sync(self) -> None:
        snap = await self.feed.listing(INDEX_LISTING)
        entries = []
        for raw in snap.of(Kind.PORT):
            if isinstance(raw, PortEntry):
                entries.append(raw)
                continue
            try:
                entries.append(PortEntry.from_api(raw))
            except (KeyError, TypeError):
                LOG.warning("skipping a port without an id in the listing: %r", raw)
        self.index.replace(snap.revision, entries, [str(r["id"]) for r in snap.of(Kind.ROUTER)])
        self.connected = True
        if not self.ready.is_set():
            LOG.info("port index ready at revision %d (%d ports)", snap.revision, len(entries))
        self.ready.set()
        if self.on_change is not None:
            self.on_change(None)

    async def apply_batch(self, batch: ChangeBatch) -> None:
        if len(batch.records) > self.resync_over:
            LOG.info("%d changes at once; resynchronising instead", len(batch.records))
            await self.full_sync()
            return
        # One refetch per named resource: the current state answers for every record of it.
        seen: set[tuple[str, str]] = set()
        touched: set[str] = set()
        for rec in batch.records:
            key = (rec.resource, rec.resource_id)
            if key in seen:
                continue
            seen.add(key)
            for change in await self._changes_for(rec):
                if self.on_change is not None:
                    touched |= self._networks_of(change)
                self.index.apply(change)
        self.index.advance(batch.revision)
        if self.on_change is not None and touched:
            self.on_change(touched)

    def _networks_of(self, change: IndexChange) -> set[str]:
        """The networks a port change touches: the port's network before and after."""
        port_id = (change.port.id if isinstance(change, PortUpsert)
                   else change.port_id if isinstance(change, PortRemoved) else None)
        if port_id is None:
            return set()
        old = self.index.port(port_id)
        out = {old.network_id} if old is not None else set()
        if isinstance(change, PortUpsert):
            out.add(change.port.network_id)
        return out

    async def _changes_for(self, rec: ChangeRecord) -> list[IndexChange]:
        if rec.resource == Kind.PORT:
            return [await self._port_state(rec.resource_id)]
        if rec.resource == Kind.ROUTER:
            router = await self.feed.fetch(Kind.ROUTER, rec.resource_id)
            return [RouterUpsert(rec.resource_id) if router is not None
                    else RouterRemoved(rec.resource_id)]
        if rec.resource == Kind.INSTANCE:
            # Ports we hold for it (maybe unbound now) and ports bound to it (maybe new).
            ids = {p.id for p in self.index.ports_of_device(rec.resource_id)}
            out: list[IndexChange] = []
            for raw in await self.feed.find(Kind.PORT, device_id=rec.resource_id):
                entry = PortEntry.from_api(raw)
                ids.discard(entry.id)
                out.append(PortUpsert(entry))
            for port_id in ids:
                out.append(await self._port_state(port_id))
            return out
        if rec.resource == Kind.NETWORK and rec.op == "delete":
            return [PortRemoved(p.id) for p in list(self.index.ports())
                    if p.network_id == rec.resource_id]
        # project, subnet, keypair and network updates do not change (network, IP) -> port.
        return []

    async def _port_state(self, port_id: str) -> IndexChange:
        port = await self.feed.fetch(Kind.PORT, port_id)
        return PortUpsert(PortEntry.from_api(port)) if port is not None else PortRemoved(port_id)
