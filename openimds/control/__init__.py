"""The control plane: the REST API (Neutron v2.0 / Nova v2.1 shapes), tokens, IPAM, and the
HTTP client the CLI and the agents use. See docs/control-plane.md."""

from openimds.control.app import build_app
from openimds.control.call import Settings
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
