"""Metrics: counted in plain ints on the request path, exported exactly at scrape time."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from openimds.metadata.metrics import BUCKETS, MetadataMetrics, render_metrics

OBSERVATIONS = [
    (200, "openstack", 0.0001),
    (200, "openstack", 0.0005),  # exactly on a bound: le="0.0005"
    (200, "openstack", 0.0031),
    (404, "ec2", 0.02),
    (200, "ec2", 7.5),  # above every bound: +Inf only
    (200, "root", 0.0),
]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the `_created` timestamps, which differ between two metric objects."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def reference(observations: list[tuple[int, str, float]]) -> CollectorRegistry:
    """The same metrics fed the plain prometheus_client way."""
    registry = CollectorRegistry()
    requests = Counter("openimds_metadata_requests", "x", ["status", "family"], registry=registry)
    latency = Histogram(
        "openimds_metadata_request_seconds", "x", ["family"], buckets=BUCKETS, registry=registry
    )
    cache = Counter("openimds_metadata_cache", "x", ["cache", "result"], registry=registry)
    for status, family, seconds in observations:
        requests.labels(str(status), family).inc()
        latency.labels(family).observe(seconds)
    cache.labels("view", "hit").inc(2)
    cache.labels("tree", "miss").inc()
    return registry


def test_scrape_exports_exactly_what_plain_prometheus_client_would() -> None:
    metrics = MetadataMetrics()
    for observation in OBSERVATIONS:
        metrics.observe(*observation)
    metrics.cache_event("view", True)
    metrics.cache_event("view", True)
    metrics.cache_event("tree", False)
    got = samples(metrics.registry)
    want = samples(reference(OBSERVATIONS))
    assert set(got) == set(want)
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-12, key


def test_flushes_never_count_twice() -> None:
    metrics = MetadataMetrics()
    metrics.observe(*OBSERVATIONS[0])
    metrics.flush()
    metrics.flush()
    samples(metrics.registry)  # a scrape flushes too
    for observation in OBSERVATIONS[1:]:
        metrics.observe(*observation)
    metrics.cache_event("view", True)
    metrics.cache_event("view", True)
    metrics.flush()
    metrics.cache_event("tree", False)
    got = samples(metrics.registry)
    want = samples(reference(OBSERVATIONS))
    assert {k: round(v, 12) for k, v in got.items()} == {k: round(v, 12) for k, v in want.items()}


async def test_flush_on_loop_exports_after_the_iteration() -> None:
    # Multiprocess workers: the parent reads what the prometheus_client values hold, so they
    # must be updated without a scrape of this registry.
    metrics = MetadataMetrics()
    metrics.flush_on(asyncio.get_running_loop())

    def exported() -> float:
        return sum(
            s.value
            for m in metrics.requests.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )

    metrics.observe(200, "ec2", 0.001)
    metrics.observe(200, "ec2", 0.001)
    assert exported() == 0
    await asyncio.sleep(0)
    assert exported() == 2


def test_session_token_counters_and_per_instance_usage() -> None:
    m = MetadataMetrics()
    for state, instance in [("none", "a"), ("none", "a"), ("invalid", "b"), ("valid", "a"),
                            ("none", None)]:
        m.token_event(state, instance)
    text = render_metrics(m.registry).decode()
    assert 'openimds_metadata_session_token_requests_total{state="none"} 3.0' in text
    assert 'openimds_metadata_session_token_requests_total{state="invalid"} 1.0' in text
    assert 'openimds_metadata_session_token_requests_total{state="valid"} 1.0' in text
    # Valid requests are not "usage to migrate"; unidentified ones have no instance.
    assert m.take_instance_usage() == {"a": [2, 0], "b": [0, 1]}
    assert m.take_instance_usage() == {}
