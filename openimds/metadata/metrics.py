"""Prometheus metrics of the metadata API, on a private registry per process.

With several workers, prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by
the parent before the workers start) merges every worker's values for the one metrics listener.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

__all__ = ["MetadataMetrics", "render_metrics"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MetadataMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "openimds_metadata_requests",
            "Metadata API requests by status code and path family (root, ec2, openstack).",
            ["status", "family"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "openimds_metadata_request_seconds",
            "Time from request to response, by path family.",
            ["family"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "openimds_metadata_cache",
            "Cache lookups by cache (view, address, tree) and result (hit, miss).",
            ["cache", "result"],
            registry=self.registry,
        )

    def observe(self, status: int, family: str, seconds: float) -> None:
        self.requests.labels(str(status), family).inc()
        self.latency.labels(family).observe(seconds)

    def cache_event(self, cache: str, hit: bool) -> None:
        self.cache.labels(cache, "hit" if hit else "miss").inc()


def render_metrics(registry: CollectorRegistry | None) -> bytes:
    """The exposition text: this process's registry, or every worker's in multiprocess mode."""
    if registry is None:
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
        return generate_latest(merged)
    return generate_latest(registry)
