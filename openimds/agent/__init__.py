"""The metadata agent: (guest address, network|router) -> instance, signed, forwarded.

Public surface (everything else is internal to the package); see docs/agent.md.
"""

from openimds.agent.control_feed import ControlFeed
from openimds.agent.errors import AgentError
from openimds.agent.feed import (
    ChangeBatch,
    ChangeRecord,
    FeedGap,
    FeedUnavailable,
    IndexSync,
    InventoryFeed,
    Snapshot,
)
from openimds.agent.index import PortEntry, PortIndex
from openimds.agent.resolve import AgentRequest, Resolution, resolve
from openimds.agent.server import bind_unix_socket, build_app, run_worker, serve
from openimds.agent.settings import AgentSettings, from_conf
from openimds.agent.upstream import Upstream, UpstreamResponse

__all__ = [
    "AgentError",
    "AgentRequest",
    "AgentSettings",
    "ChangeBatch",
    "ChangeRecord",
    "ControlFeed",
    "FeedGap",
    "FeedUnavailable",
    "IndexSync",
    "InventoryFeed",
    "PortEntry",
    "PortIndex",
    "Resolution",
    "Snapshot",
    "Upstream",
    "UpstreamResponse",
    "bind_unix_socket",
    "build_app",
    "from_conf",
    "resolve",
    "run_worker",
    "serve",
]
