"""ControlFeed: the InventoryFeed over the control-plane API (openimds.control.client).

Authenticates with the seed's REST-era options (auth_url, admin_user, admin_password,
admin_tenant_name); the user needs the `service` or `admin` role to read the change feed.

    snapshot()       GET /v2.0/changes?limit=0 (the current revision C), then list ports and
                     routers; watching from C replays anything committed during the listing.
    changes(since)   GET /v2.0/changes?since=N&timeout=S (long poll)
    get_port(id)     GET /v2.0/ports/{id}, 404 -> None          (likewise get_router)

Client exceptions are translated here, once: connection errors, auth failures and 5xx become
FeedUnavailable (the sync loop backs off and retries); a feed whose revision went backwards
(a restored or replaced database) or that answers 410 (history pruned past our revision) is a
FeedGap (full resync).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from openimds.agent.feed import ChangeBatch, ChangeRecord, FeedGap, FeedUnavailable, Snapshot
from openimds.agent.index import PortEntry
from openimds.agent.settings import AgentSettings
from openimds.control.client import (
    ApiConnectionError,
    ApiError,
    ControlClient,
    MissingCredentials,
    check_credentials,
    control_client,
)
from openimds.rows import compact_row

__all__ = ["ControlFeed", "MissingCredentials"]


_WHERE = "metadata_agent.ini [DEFAULT]"

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


@asynccontextmanager
async def _api_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except ApiConnectionError as exc:
        raise FeedUnavailable(f"{what}: {exc}") from exc
    except ApiError as exc:
        hint = ""
        if exc.status in (401, 403):
            hint = (" (check admin_user/admin_password/admin_tenant_name; the user needs the "
                    "service or admin role)")
        raise FeedUnavailable(f"{what}: {exc}{hint}") from exc


class ControlFeed:
    def __init__(self, client: ControlClient) -> None:
        self.client = client

    @staticmethod
    def check_settings(settings: AgentSettings) -> None:
        """Raise MissingCredentials naming every option that is unset."""
        check_credentials(settings.auth_url, settings.username, settings.password,
                          settings.project_name, _WHERE)

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> ControlFeed:
        """Call inside the running event loop (the client's session binds to it). The agents'
        one construction path: credential check, TLS (auth_insecure, auth_ca_cert), region."""
        return cls(control_client(
            settings.auth_url, settings.username, settings.password, settings.project_name,
            region=settings.auth_region, insecure=settings.auth_insecure,
            ca_cert=settings.auth_ca_cert, where=_WHERE))

    async def aclose(self) -> None:
        await self.client.close()

    async def snapshot(self) -> Snapshot:
        async with _api_errors("reading the inventory"):
            head = await self.client.changes(since=0, timeout=0, limit=0)
            # Only what the index reads, asked as Neutron `fields` and made into index
            # entries page by page: 100k whole ports as dicts were ~250 MB.
            ports = await self.client.list("ports", fields=list(INDEX_FIELDS),
                                           each=_index_entry)
            routers = await self.client.list("routers")
        return Snapshot(head.current_revision, ports, [str(r["id"]) for r in routers])

    async def changes(self, since: int, timeout: float) -> ChangeBatch:
        async with _api_errors("watching the change feed"):
            try:
                page = await self.client.changes(since=since, timeout=timeout)
            except ApiError as exc:
                if exc.status == 410:
                    raise FeedGap(exc.message) from exc
                raise
        if page.current_revision < since:
            raise FeedGap(f"the control plane is at revision {page.current_revision}, "
                          f"behind our {since}")
        records = [ChangeRecord(int(c["revision"]), str(c["resource"]), str(c["resource_id"]),
                                str(c["op"])) for c in page.changes]
        return ChangeBatch(records, page.revision)

    async def _get(self, resource: str, rid: str) -> Mapping[str, Any] | None:
        async with _api_errors(f"reading {resource} {rid}"):
            try:
                return await self.client.get(resource, rid)
            except ApiError as exc:
                if exc.status == 404:  # deleted since the change was recorded
                    return None
                raise

    async def get_port(self, port_id: str) -> Mapping[str, Any] | None:
        return await self._get("ports", port_id)

    async def get_router(self, router_id: str) -> Mapping[str, Any] | None:
        return await self._get("routers", router_id)

    async def ports_of_device(self, device_id: str) -> Sequence[Mapping[str, Any]]:
        async with _api_errors(f"listing ports of {device_id}"):
            return await self.client.list("ports", device_id=device_id)
