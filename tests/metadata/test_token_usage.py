"""The token-usage writer's pace: every interval while writes are cheap, less often when they
cost more (at most WRITE_SHARE of a core, never longer than max_interval), nothing lost."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from sqlalchemy import select

from openimds.inventory.migrate import open_store
from openimds.inventory.models import MetadataTokenUsage
from openimds.inventory.store import Store
from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.token_usage import WRITE_SHARE, TokenUsageWriter, next_wait


@pytest.mark.parametrize(
    ("interval", "max_interval", "spent", "share", "expected"),
    [
        (1.0, 60.0, 0.0, 0.02, 1.0),  # nothing written: the interval
        (1.0, 60.0, 0.01, 0.02, 1.0),  # 1% of a core at the interval: the interval
        (1.0, 60.0, 0.1, 0.02, 5.0),  # 0.1 s of CPU a write: 2% of a core every 5 s
        (1.0, 60.0, 1.0, 0.02, 50.0),  # 100k rows at ~10 us each
        (1.0, 60.0, 5.0, 0.02, 60.0),  # never longer than max_interval
        (10.0, 5.0, 1.0, 0.02, 10.0),  # a max below the interval: the interval wins
        (1.0, 60.0, 0.5, 0.1, 5.0),  # another share
    ],
)
def test_next_wait(interval: float, max_interval: float, spent: float, share: float,
                   expected: float) -> None:
    assert next_wait(interval, max_interval, spent, share) == pytest.approx(expected)


def test_default_share_is_the_documented_two_percent() -> None:
    assert next_wait(1.0, 60.0, 0.2) == pytest.approx(0.2 / WRITE_SHARE) == pytest.approx(10.0)


def _rows(store: Store) -> dict[str, tuple[int, int]]:
    with store.read() as s:
        return {r.instance_uuid: (r.tokenless_requests, r.invalid_token_requests)
                for r in s.scalars(select(MetadataTokenUsage))}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path / 'inventory.sqlite'}")
    yield store  # type: ignore[misc]
    store.dispose()


async def test_the_wait_follows_the_cpu_the_last_write_took(store: Store) -> None:
    metrics = MetadataMetrics()
    writer = TokenUsageWriter(store, metrics.take_instance_usage, interval=0.5,
                              max_interval=30.0)
    assert writer.wait() == 0.5  # nothing written yet
    for n in range(3000):
        metrics.token_event("none", f"i-{n}")
    await writer.flush()
    assert writer.spent > 0
    assert writer.wait() == pytest.approx(next_wait(0.5, 30.0, writer.spent))
    assert len(_rows(store)) == 3000


async def test_counts_wait_in_memory_and_stop_writes_them(store: Store) -> None:
    """A long wait loses nothing: what was counted since the last write is written at stop,
    added to what was written before."""
    metrics = MetadataMetrics()
    writer = TokenUsageWriter(store, metrics.take_instance_usage, interval=3600.0,
                              max_interval=3600.0)
    metrics.token_event("none", "a")
    await writer.flush()
    writer.start()
    await asyncio.sleep(0)
    for state, instance in [("none", "a"), ("none", "a"), ("invalid", "a"), ("invalid", "b")]:
        metrics.token_event(state, instance)
    assert _rows(store) == {"a": (1, 0)}  # not written yet: the next write is an hour away
    await writer.stop()
    assert _rows(store) == {"a": (3, 1), "b": (0, 1)}


async def test_a_write_every_interval_while_writes_are_cheap(store: Store) -> None:
    metrics = MetadataMetrics()
    writer = TokenUsageWriter(store, metrics.take_instance_usage, interval=0.1,
                              max_interval=60.0)
    writer.start()
    try:
        metrics.token_event("none", "a")
        for _ in range(200):
            if _rows(store) == {"a": (1, 0)}:
                break
            await asyncio.sleep(0.05)
        assert _rows(store) == {"a": (1, 0)}
        # One row (plus a first write's statement compilation): a few ms of CPU at most.
        assert writer.wait() == pytest.approx(next_wait(0.1, 60.0, writer.spent))
        assert writer.wait() < 1.0
    finally:
        await writer.stop()


def test_usage_counts_hold_no_container_per_instance() -> None:
    """Counts kept between writes are flat {uuid: int} maps the collector does not track: a
    list per instance at 100k instances was enough garbage-collector work to trigger full
    collections of the whole heap."""
    metrics = MetadataMetrics()
    for n in range(100):
        metrics.token_event("none", f"i-{n}")
        metrics.token_event("invalid", f"j-{n}")
        metrics.answered_again((200, "openstack"), 0.0001, f"i-{n}")
    assert not gc.is_tracked(metrics._tokenless_again)
    assert not gc.is_tracked(metrics._invalid)
    taken = metrics.take_instance_usage()
    assert taken["i-7"] == [2, 0] and taken["j-7"] == [0, 1] and len(taken) == 200
    assert metrics.take_instance_usage() == {}


@pytest.mark.parametrize(
    ("lines", "trees", "interval", "max_interval"),
    [
        ("", 4096, 1.0, 60.0),  # the fast layer keeps answers as bytes: fewer trees
        ("metadata_http_server = aiohttp\n", 20000, 1.0, 60.0),
        ("metadata_answer_cache_size = 0\n", 20000, 1.0, 60.0),
        ("metadata_token_usage_interval = 2.5\nmetadata_token_usage_max_interval = 30\n",
         4096, 2.5, 30.0),
    ],
)
def test_metadata_api_settings_from_config(tmp_path: Path, lines: str, trees: int,
                                           interval: float, max_interval: float) -> None:
    from openimds.config import load_config
    from openimds.metadata.settings import settings_from_conf

    conf_file = tmp_path / "nova.conf"
    conf_file.write_text("[DEFAULT]\n" + lines + "[neutron]\nmetadata_proxy_shared_secret = s\n")
    settings = settings_from_conf(load_config("metadata-api", [str(conf_file)], []))
    assert settings.respond.tree_cache_size == trees
    assert (settings.token_usage_interval, settings.token_usage_max_interval) == (
        interval, max_interval)
