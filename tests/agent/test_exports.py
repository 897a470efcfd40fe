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
        # Each name is the package's own (defined in one of its modules) or the change feed's
        # (openimds.feed: the agent's feed types are the feed's, under the names scripts
        # already import), not a value that merely happens to be bound: a re-export of any
        # other foreign name or a stray global fails. (The whole tree's __all__ rules are
        # tests/test_exports.py.)
        value = vars(agent)[name]
        assert value.__module__.startswith(("openimds.agent.", "openimds.feed.")), (
            name, value.__module__)
