"""Keeping the PortIndex current: a full listing at revision N, then the change feed from N.

    InventoryFeed (Protocol)   what the agent needs from the control plane; declared here, by its
                               consumer. `control_feed.ControlFeed` implements it over the
                               control-plane API client; tests use an in-memory fake.
    IndexSync                  the loop: snapshot -> watch -> apply, with backoff and resync.

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
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openimds.agent.index import (
    IndexChange,
    PortEntry,
    PortIndex,
    PortRemoved,
    PortUpsert,
    RouterRemoved,
    RouterUpsert,
)

__all__ = [
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


class FeedError(Exception):
    """Base of what an InventoryFeed may raise; anything else is a bug and propagates."""


class FeedUnavailable(FeedError):
    """The control plane cannot be reached, refused our credentials, or failed (5xx)."""


class FeedGap(FeedError):
    """The feed cannot replay from the requested revision (pruned history): resync."""


@dataclass(frozen=True)
class ChangeRecord:
    revision: int
    resource: str
    resource_id: str
    op: str


@dataclass(frozen=True)
class ChangeBatch:
    records: Sequence[ChangeRecord]
    revision: int  # pass as the next `since`


@dataclass(frozen=True)
class Snapshot:
    """Every port and router id, listed after reading `revision` (so nothing is missed)."""

    revision: int
    # Port dicts, or entries already made from them page by page (ControlFeed: 100k ports
    # never exist as dicts at once).
    ports: Sequence[Mapping[str, Any] | PortEntry]
    router_ids: Sequence[str]


class InventoryFeed(Protocol):
    async def snapshot(self) -> Snapshot: ...

    async def changes(self, since: int, timeout: float) -> ChangeBatch: ...

    async def get_port(self, port_id: str) -> Mapping[str, Any] | None: ...

    async def get_router(self, router_id: str) -> Mapping[str, Any] | None: ...

    async def ports_of_device(self, device_id: str) -> Sequence[Mapping[str, Any]]: ...


@dataclass
class Backoff:
    """Exponential backoff with jitter, so many agents do not hammer a recovering API at once."""

    initial: float = 0.5
    maximum: float = 15.0
    _next: float = field(default=0.0, init=False)

    def reset(self) -> None:
        self._next = 0.0

    def next_delay(self) -> float:
        self._next = self.initial if self._next == 0 else min(self.maximum, self._next * 2)
        return self._next * random.uniform(0.8, 1.2)


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
        self.synced_at: float | None = None
        self.syncs = 0
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
        snap = await self.feed.snapshot()
        entries = []
        for raw in snap.ports:
            if isinstance(raw, PortEntry):
                entries.append(raw)
                continue
            try:
                entries.append(PortEntry.from_api(raw))
            except (KeyError, TypeError):
                LOG.warning("skipping a port without an id in the listing: %r", raw)
        self.index.replace(snap.revision, entries, snap.router_ids)
        self.connected = True
        self.syncs += 1
        self.synced_at = time.monotonic()
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
        if rec.resource == "port":
            return [await self._port_state(rec.resource_id)]
        if rec.resource == "router":
            router = await self.feed.get_router(rec.resource_id)
            return [RouterUpsert(rec.resource_id) if router is not None
                    else RouterRemoved(rec.resource_id)]
        if rec.resource == "instance":
            # Ports we hold for it (maybe unbound now) and ports bound to it (maybe new).
            ids = {p.id for p in self.index.ports_of_device(rec.resource_id)}
            out: list[IndexChange] = []
            for raw in await self.feed.ports_of_device(rec.resource_id):
                entry = PortEntry.from_api(raw)
                ids.discard(entry.id)
                out.append(PortUpsert(entry))
            for port_id in ids:
                out.append(await self._port_state(port_id))
            return out
        if rec.resource == "network" and rec.op == "delete":
            return [PortRemoved(p.id) for p in list(self.index.ports())
                    if p.network_id == rec.resource_id]
        # project, subnet, keypair and network updates do not change (network, IP) -> port.
        return []

    async def _port_state(self, port_id: str) -> IndexChange:
        port = await self.feed.get_port(port_id)
        return PortUpsert(PortEntry.from_api(port)) if port is not None else PortRemoved(port_id)
