"""Per-instance rate limiting in the agent (issue 16): pure token-bucket tables, the default
sized against a real crawl of the rendered tree, and the agent answering 429 + Retry-After with
its counters on /metrics while other guests are served."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from openimds.agent.ratelimit import BucketPolicy, Decision, TokenBuckets, retry_after_header
from openimds.config import load_config
from openimds.feed import Kind, MemoryFeed
from openimds.metadata.tree import Dir, render_tree
from tests.metadata.fixtures import full_view

from .fakes import port_dict
from .harness import RunningAgent, StubUpstream, settings_for

SECRET = "S3cr3t!"


def test_burst_then_refusal_then_refill() -> None:
    b = TokenBuckets(BucketPolicy(rate=2.0, burst=3))
    key = ("net-a", "10.0.0.5")
    assert [b.take(key, 0.0).allowed for _ in range(3)] == [True, True, True]
    assert b.take(key, 0.0) == Decision(False, 0.5, True)  # one token back in 1/rate
    assert b.take(key, 0.25) == Decision(False, 0.25, False)  # logged once, not again
    assert b.take(key, 0.5).allowed  # refilled one token
    assert not b.take(key, 0.5).allowed
    assert [b.take(key, 10.0).allowed for _ in range(4)] == [True, True, True, False]  # capped
    assert (b.allowed, b.refused) == (7, 4)


@pytest.mark.parametrize(
    "other",
    [("net-a", "10.0.0.6"),  # another address on the network
     ("net-b", "10.0.0.5"),  # the same address on another (overlapping) network
     ("net-a", "fd00::5")],  # the guest's IPv6 address: same limiter, its own bucket
)
def test_buckets_are_per_network_and_address(other: tuple[str, str]) -> None:
    b = TokenBuckets(BucketPolicy(rate=1.0, burst=1))
    assert b.take(("net-a", "10.0.0.5"), 0.0).allowed
    assert not b.take(("net-a", "10.0.0.5"), 0.0).allowed
    assert b.take(other, 0.0).allowed


def test_full_buckets_are_pruned() -> None:
    b = TokenBuckets(BucketPolicy(rate=1.0, burst=2), prune_every=1000)
    for i in range(10):
        b.take(("n", f"10.0.0.{i}"), 0.0)
        b.take(("n", f"10.0.0.{i}"), 0.0)  # empty now
    assert not b.take(("n", "10.0.0.0"), 0.0).allowed
    assert b.limited_count() == 1
    b.prune(1.0)  # one token back each: still below burst 2
    assert len(b) == 10
    b.prune(2.0)
    assert len(b) == 0 and b.limited_count() == 0


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30, "30")])
def test_retry_after_is_whole_seconds_never_zero(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def _crawl_requests(d: Dir) -> int:
    return 1 + sum(_crawl_requests(c) if isinstance(c, Dir) else 1 for c in d.children.values())


def test_default_burst_covers_three_full_cloud_init_boots(tmp_path: Path) -> None:
    tree = render_tree(full_view(), today=date(2026, 1, 1))
    ec2 = _crawl_requests(tree.root.children["latest"].children["meta-data"])  # type: ignore[union-attr]
    # cloud-init 22.4.2: GET /openstack twice, then its five OpenStack files, then the crawl
    # (bench/_harness.py), plus user-data and the instance-id checks of later boot stages.
    full_boot = 2 + 5 + ec2 + 4
    ini = tmp_path / "metadata_agent.ini"
    ini.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n")
    g = load_config("metadata-agent", [str(ini)]).metadata_rate_limiting
    assert g.instance_rate_limit_enabled
    assert g.instance_burst >= 3 * full_boot, (g.instance_burst, full_boot)
    print(f"\nfull boot {full_boot} requests; default burst {g.instance_burst}")


@pytest.fixture
async def upstream() -> AsyncIterator[StubUpstream]:
    up = StubUpstream(SECRET)
    await up.start()
    yield up
    await up.stop()


async def test_one_budget_per_instance_over_ipv4_ipv6_and_link_local(
    tmp_path: Path, upstream: StubUpstream
) -> None:
    """A dual-stack guest's addresses (IPv4, global IPv6, the EUI-64 link-local of its MAC)
    spend one bucket: IPv6 gives a guest no extra budget, and it is held the same way."""
    feed = MemoryFeed()
    port = port_dict("p-a", "net-a", "10.0.0.5", device="vm-a", mac="fa:16:3e:00:00:05")
    port["fixed_ips"].append({"subnet_id": "sub6-net-a", "ip_address": "fd00::f816:3eff:fe00:5"})
    feed.put(Kind.PORT, port)
    feed.put(Kind.PORT, port_dict("p-b", "net-a", "10.0.0.6", device="vm-b"))
    settings = dataclasses.replace(
        settings_for(tmp_path, [upstream.url], SECRET),
        rate_limit=BucketPolicy(rate=0.01, burst=3),
    )
    async with RunningAgent(settings, feed) as agent:
        await agent.wait_ready()
        sources = ["10.0.0.5", "fd00::f816:3eff:fe00:5", "fe80::f816:3eff:fe00:5"]
        statuses = [(await agent.request(xff=[s], network=["net-a"])).status for s in sources]
        assert statuses == [200, 200, 200]
        for source in sources:
            assert (await agent.request(xff=[source], network=["net-a"])).status == 429
        assert (await agent.request(xff=["10.0.0.6"], network=["net-a"])).status == 200


async def test_agent_answers_429_with_retry_after_and_counts_it(
    tmp_path: Path, upstream: StubUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    feed = MemoryFeed()
    feed.put(Kind.PORT, port_dict("p-a", "net-a", "10.0.0.5", device="vm-a"))
    feed.put(Kind.PORT, port_dict("p-b", "net-a", "10.0.0.6", device="vm-b"))
    settings = dataclasses.replace(
        settings_for(tmp_path, [upstream.url], SECRET),
        rate_limit=BucketPolicy(rate=0.01, burst=5),
    )
    async with RunningAgent(settings, feed) as agent:
        await agent.wait_ready()
        with caplog.at_level(logging.DEBUG, logger="openimds.agent"):
            statuses = [(await agent.request(xff=["10.0.0.5"], network=["net-a"])).status
                        for _ in range(5)]
            refused = [await agent.request(xff=["10.0.0.5"], network=["net-a"])
                       for _ in range(3)]
        assert statuses == [200] * 5
        assert [r.status for r in refused] == [429] * 3
        assert refused[0].headers["Retry-After"] == "100"  # 1 token at 0.01/s
        assert b"retry after 100 s" in refused[0].body
        # The neighbour is not affected.
        assert (await agent.request(xff=["10.0.0.6"], network=["net-a"])).status == 200
        # One WARNING when the guest starts being limited, not one per refused request.
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "10.0.0.5" in warnings[0].getMessage()
        metrics = (await agent.request("/metrics")).body.decode()
        assert "openimds_agent_rate_limit_refused_total 3.0" in metrics
        assert "openimds_agent_rate_limit_allowed_total 6.0" in metrics
        assert "openimds_agent_rate_limit_limited_guests 1.0" in metrics
        # A guest cannot read the agent's metrics: with a proxy header it is a guest request.
        assert b"openimds_agent" not in (
            await agent.request("/metrics", xff=["10.0.0.6"], network=["net-a"])).body
