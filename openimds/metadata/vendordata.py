"""Vendor data: the StaticJSON document and the DynamicJSON targets (spec section 9).

`merge_vendordata2` is pure. `DynamicVendordata` does the HTTP: one POST per configured target
per `vendor_data2.json` request, nova's body and headers, per-target timeouts, and failures
turned into `{}` plus a warning unless the operator made them fatal.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from openimds.metadata.errors import UpstreamFailed
from openimds.metadata.view import InstanceView
from openimds.wire import DYNAMIC_JSON, STATIC_JSON

__all__ = [
    "DynamicTarget",
    "DynamicVendordata",
    "DynamicVendordataOptions",
    "load_static_vendordata",
    "merge_vendordata2",
    "parse_targets",
    "vendordata_request_body",
]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DynamicTarget:
    name: str
    url: str


@dataclass(frozen=True)
class DynamicVendordataOptions:
    targets: tuple[DynamicTarget, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    ssl_certfile: str | None = None
    failure_fatal: bool = False


def parse_targets(values: Iterable[str]) -> tuple[DynamicTarget, ...]:
    """`name@url` entries: without `@` skipped, a repeated name skipped (the first wins)."""
    targets: dict[str, DynamicTarget] = {}
    for value in values:
        if "@" not in value:
            LOG.warning("vendordata_dynamic_targets: %r has no name@ prefix; skipped", value)
            continue
        name, url = value.split("@", 1)
        if name in targets:
            LOG.warning("vendordata_dynamic_targets: duplicate name %r; skipped", name)
            continue
        targets[name] = DynamicTarget(name, url)
    return tuple(targets.values())


def load_static_vendordata(path: str | None) -> dict[str, Any]:
    """The StaticJSON document, read once at startup so a broken file stops the service."""
    if not path:
        return {}
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: vendordata must be a JSON object")
    return doc


def merge_vendordata2(
    providers: Sequence[str],
    static: Mapping[str, Any] | None,
    dynamic: Sequence[tuple[str, Any]],
) -> dict[str, Any]:
    """vendor_data2.json: walk the providers in order; an already-present key is dropped."""
    out: dict[str, Any] = {}
    for provider in providers:
        if provider == STATIC_JSON and static is not None:
            out["static"] = dict(static)
        elif provider == DYNAMIC_JSON:
            for name, doc in dynamic:
                if name in out:
                    LOG.warning("vendordata target %r collides with an existing key; dropped", name)
                    continue
                out[name] = doc
    return out


def vendordata_request_body(view: InstanceView, boot_roles: str = "") -> dict[str, Any]:
    """The JSON nova POSTs to each dynamic target."""
    user_data = None if view.user_data is None else base64.b64encode(view.user_data).decode()
    return {
        "project-id": view.project_id,
        "instance-id": view.uuid,
        "image-id": view.image_ref,
        "user-data": user_data,
        "hostname": view.hostname,
        "metadata": dict(view.metadata),
        "boot-roles": boot_roles,
    }


class DynamicVendordata:
    """Fetches every DynamicJSON target for one instance. Create and close on the event loop."""

    def __init__(self, options: DynamicVendordataOptions) -> None:
        self.options = options
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = True
            if self.options.ssl_certfile:
                ssl_ctx = ssl.create_default_context(cafile=self.options.ssl_certfile)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_ctx),
                timeout=aiohttp.ClientTimeout(
                    sock_connect=self.options.connect_timeout,
                    sock_read=self.options.read_timeout,
                ),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _one(self, target: DynamicTarget, body: dict[str, Any]) -> Any:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "openstack-nova-vendordata",
        }
        try:
            async with self._client().post(target.url, json=body, headers=headers) as resp:
                resp.raise_for_status()
                raw = await resp.read()
                return json.loads(raw) if raw else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self.options.failure_fatal:
                raise UpstreamFailed(
                    log_detail=f"vendordata target {target.name}: {exc!r}"
                ) from exc
            LOG.warning(
                "vendordata target %s (%s) failed: %r; using {}", target.name, target.url, exc
            )
            return {}

    async def fetch(self, view: InstanceView) -> list[tuple[str, Any]]:
        """(target name, document) for every target, in configuration order, fetched at once."""
        if not self.options.targets:
            return []
        body = vendordata_request_body(view)
        docs = await asyncio.gather(*(self._one(t, body) for t in self.options.targets))
        return [(t.name, doc) for t, doc in zip(self.options.targets, docs, strict=True)]
