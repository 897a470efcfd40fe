"""Pins the package's public surface (what other parts and operators' scripts may import)."""

from __future__ import annotations

import openimds.agent as agent


def test_exports() -> None:
    assert sorted(agent.__all__) == sorted([
        "AgentError", "AgentRequest", "AgentSettings", "ChangeBatch", "ChangeRecord",
        "ControlFeed", "FeedGap", "FeedUnavailable", "IndexSync", "InventoryFeed", "PortEntry",
        "PortIndex", "Resolution", "Snapshot", "Upstream", "UpstreamResponse",
        "bind_unix_socket", "build_app", "from_conf", "resolve", "run_worker", "serve",
    ])
    for name in agent.__all__:
        assert getattr(agent, name) is not None
