"""Fixtures of the metadata API tests."""

from __future__ import annotations

import pytest

from tests.metadata.servers import HTTP_SERVERS


@pytest.fixture(params=HTTP_SERVERS)
def http_server(request: pytest.FixtureRequest) -> str:
    """The HTTP layer a test serves the API with (`[DEFAULT] metadata_http_server`)."""
    return str(request.param)
