"""Building requests for the responder in tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import date
from typing import Any

from openimds.metadata.respond import MetadataRequest, MetadataResponse, Responder
from openimds.wire import sign_instance_id

TODAY = date(2026, 1, 1)
_counter = itertools.count()


def counting_bytes(n: int) -> bytes:
    """Deterministic but different on every call, like fresh entropy must be."""
    return next(_counter).to_bytes(8, "big") * (n // 8)


def signed_headers(instance_id: str, tenant: str, secret: str) -> list[tuple[str, str]]:
    return [
        ("X-Instance-ID", instance_id),
        ("X-Tenant-ID", tenant),
        ("X-Instance-ID-Signature", sign_instance_id(secret, instance_id)),
    ]


async def call(
    responder: Responder,
    path: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    peer: str | None = "192.0.2.10",
    body: bytes | None = None,
    today: date = TODAY,
    now: float = 0.0,
) -> MetadataResponse:
    req = MetadataRequest(
        method=method,
        path=path,
        headers=tuple(headers or ()),
        peer=peer,
        today=today,
        random_bytes=counting_bytes,
        body=body,
        now=now,
    )
    return await responder.respond(req)


async def wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    """Wait (without blocking the loop) until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
