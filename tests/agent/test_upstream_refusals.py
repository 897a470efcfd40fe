"""What the agent refuses to forward: typed errors with a status, never a bare exception."""

from __future__ import annotations

import pytest

from openimds.agent.errors import BadTarget, UnforwardableIdentity
from openimds.agent.resolve import Resolution
from openimds.agent.settings import AgentSettings
from openimds.agent.upstream import Upstream

RES = Resolution("3bd4b0d2-8a7e-4c55-9b8e-5f1f0c7a0d11", "p1", "10.0.0.5", "port-1", "net-1")


@pytest.mark.parametrize("target", ["latest/meta-data", "/a b", "/a\x7fb", "/a\x01"])
async def test_a_target_with_control_characters_is_a_400(target: str) -> None:
    # The refusal comes before any connection: no upstream needs to listen.
    upstream = Upstream(AgentSettings(socket_path="unused", shared_secret="s",
                                      upstream_urls=("http://127.0.0.1:9",)))
    try:
        with pytest.raises(BadTarget) as caught:
            await upstream.forward("GET", target, b"", RES)
    finally:
        await upstream.close()
    assert caught.value.status == 400 and repr(target) in (caught.value.log_detail or "")


@pytest.mark.parametrize("res", [RES._replace(instance_id="a\r\nX-Evil: 1"),
                                 RES._replace(project_id="p\n")])
async def test_ids_that_are_no_header_values_are_a_500_with_a_reason(res: Resolution) -> None:
    upstream = Upstream(AgentSettings(socket_path="unused", shared_secret="s",
                                      upstream_urls=("http://127.0.0.1:9",)))
    try:
        with pytest.raises(UnforwardableIdentity) as caught:
            await upstream.forward("GET", "/latest/meta-data", b"", res)
    finally:
        await upstream.close()
    assert caught.value.status == 500 and "control characters" in (caught.value.log_detail or "")
