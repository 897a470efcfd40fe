from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.cloud import Cloud


@pytest.fixture(scope="module")
def cloud(request: pytest.FixtureRequest) -> Iterator[Cloud]:
    """One running all-in-one node shared by the tests of a module (each uses its own networks)."""
    import os

    from tests.conftest import IN_CI

    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true but not root: end-to-end tests must run in CI")
        pytest.skip("needs root (network namespaces)")
    node = Cloud()
    try:
        node.start()
        yield node
    finally:
        node.cleanup()
