"""Start the metadata API's guest-facing server of either HTTP layer on a loopback port.

Tests that speak HTTP to the API run against both layers (`[DEFAULT] metadata_http_server`):
the lean httptools server (the default) and the aiohttp server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from openimds.metadata.fastserver import fast_metadata_server
from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.respond import Responder
from openimds.metadata.server import metadata_server

HTTP_SERVERS = ["fast", "aiohttp"]


async def start_metadata(
    kind: str, responder: Responder, metrics: MetadataMetrics | None = None, **kwargs: Any
) -> tuple[int, Callable[[], Awaitable[None]]]:
    """Serve `responder` on 127.0.0.1 with layer `kind`; returns (port, stop)."""
    if kind == "fast":
        server = fast_metadata_server(responder, metrics, **kwargs)
        port = await server.start_tcp("127.0.0.1", 0)
        return port, server.close
    assert kind == "aiohttp", kind
    runner = web.ServerRunner(metadata_server(responder, metrics, **kwargs))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return site._server.sockets[0].getsockname()[1], runner.cleanup  # type: ignore[union-attr]
