"""The control plane: the REST API (Neutron v2.0 / Nova v2.1 shapes), tokens, IPAM, and the
HTTP client the CLI and the agents use. See docs/control-plane.md.

The client names import eagerly (they need aiohttp only); `build_app` and `Settings` load the
server side (SQLAlchemy, the inventory) on first use, so agents and the CLI stay light.
"""

from typing import Any

from openimds.control.client import (
    ApiConnectionError,
    ApiError,
    ChangesPage,
    ControlClient,
    SyncControlClient,
)

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "ChangesPage",
    "ControlClient",
    "Settings",
    "SyncControlClient",
    "build_app",
]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from openimds.control.app import build_app

        return build_app
    if name == "Settings":
        from openimds.control.call import Settings

        return Settings
    raise AttributeError(name)
