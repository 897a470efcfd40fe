"""Prometheus metrics of the metadata API, on a private registry per process.

The request path only adds to plain ints (a prometheus_client label lookup plus a locked
increment cost ~7 µs per request, as much as the responder's own work); `flush()` moves the
accumulated deltas into the prometheus_client metrics. A scrape of `registry` flushes first, so
a single process always exports exact values. With several workers, prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the parent before the workers start) merges
every worker's files for the one metrics listener, which cannot ask the workers to flush: there
`flush_on(loop)` makes a worker flush once per event loop iteration that counted something
(under load one flush serves many requests), before the next request is read.
"""

from __future__ import annotations

import asyncio
import os
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric

__all__ = ["BUCKETS", "MetadataMetrics", "render_metrics"]

_FIRST_BOUND = 0.0005
_ANSWER_HIT = ("answer", True)
_TREE_HIT = ("tree", True)
BUCKETS = (_FIRST_BOUND, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Exporter:
    """The registry's view of MetadataMetrics: flush the pending deltas, then collect."""

    def __init__(self, owner: MetadataMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        # Names only, for the registry's duplicate check; no flush needed.
        for metric in self._owner.exported:
            yield from metric.describe()

    def collect(self) -> Iterator[Metric]:
        self._owner.flush()
        for metric in self._owner.exported:
            yield from metric.collect()


def _add_to_histogram(child: Any, counts: list[int], total: float) -> None:
    """Add per-bucket counts and their sum to a labelled Histogram child.

    prometheus_client has no public "observe n values at once"; its children have kept `_sum`
    and `_buckets` (one value per upper bound, +Inf last) for years, and
    tests/metadata/test_metrics.py compares the result with plain `observe` calls. Should they
    go, replay one observation per request at its bucket's bound: every count stays exact, only
    the sum becomes approximate (better than failing the request path or the scrape).
    """
    sum_value = getattr(child, "_sum", None)
    buckets = getattr(child, "_buckets", None)
    if sum_value is not None and buckets is not None and len(buckets) == len(counts):
        sum_value.inc(total)
        for value, n in zip(buckets, counts, strict=True):
            if n:
                value.inc(n)
        return
    bounds = (*BUCKETS, float("inf"))
    for i, n in enumerate(counts):
        for _ in range(n):
            child.observe(bounds[i] if i < len(BUCKETS) else BUCKETS[-1] * 2)


class MetadataMetrics:
    """Request, latency and cache metrics; `observe` and `cache_event` run on the event loop.

    Thread safety without a lock on the request path: the counters below are written by the
    event loop thread only and never decrease; `flush` (any thread, serialised by its own lock)
    exports the difference from what it exported last time, so nothing is lost or counted twice.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Not registered directly: `_Exporter` registers them, so every scrape flushes first.
        self.requests = Counter(
            "openimds_metadata_requests",
            "Metadata API requests by status code and path family (root, ec2, openstack).",
            ["status", "family"],
            registry=None,
        )
        self.latency = Histogram(
            "openimds_metadata_request_seconds",
            "Time from request to response, by path family.",
            ["family"],
            buckets=BUCKETS,
            registry=None,
        )
        self.cache = Counter(
            "openimds_metadata_cache",
            "Cache lookups by cache (view, address, tree, answer) and result (hit, miss).",
            ["cache", "result"],
            registry=None,
        )
        self.tokens = Counter(
            "openimds_metadata_session_token_requests",
            "Identified requests by session token state: none (tokenless, IMDSv1), valid, "
            "invalid (malformed, expired or another instance's).",
            ["state"],
            registry=None,
        )
        self.exported = (self.requests, self.latency, self.cache, self.tokens)
        self._tokens: dict[str, int] = {}
        self._done_tokens: dict[str, int] = {}
        # Per instance, not yet handed to `take_instance_usage`: tokenless and invalid-token
        # requests, as flat {uuid: int} maps. They hold no container per instance, so the
        # collector never tracks them: at 100k instances counted between two writes of the
        # token-usage writer, a list per instance was ~100k objects promoted to the oldest
        # generation each time, enough to trigger full collections of the whole heap.
        self._tokenless_again: dict[str, int] = {}
        self._invalid: dict[str, int] = {}
        # Running totals (event loop thread only) and what flush has exported of them.
        self._requests: dict[tuple[int, str], int] = {}
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._cache: dict[tuple[str, bool], int] = {}
        self._done_requests: dict[tuple[int, str], int] = {}
        self._done_buckets: dict[str, list[int]] = {}
        self._done_sums: dict[str, float] = {}
        self._done_cache: dict[tuple[str, bool], int] = {}
        self._flush_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self.registry.register(_Exporter(self))

    def flush_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush soon after anything is counted, on `loop` (the thread calling `observe`)."""
        self._loop = loop

    def _counted(self) -> None:
        if self._loop is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def observe(self, status: int, family: str, seconds: float) -> None:
        if self._loop is not None:
            self._counted()
        key = (status, family)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        buckets = self._buckets.get(family)
        if buckets is None:
            buckets = self._buckets[family] = [0] * (len(BUCKETS) + 1)
            self._sums[family] = 0.0
        # Upper bounds are inclusive (`le`): the first bound >= seconds, else +Inf.
        buckets[bisect_left(BUCKETS, seconds)] += 1
        self._sums[family] += seconds

    def answered_again(self, key: tuple[int, str], seconds: float, instance_id: str) -> None:
        """One request answered from the answers kept as bytes (`answers.py`), `key` being
        its (status, family): all that `observe`, `token_event` (tokenless) and the cache
        events count for it, in one call. It counts as an `answer` cache hit and, as the
        answer's bytes come from a rendered tree, as a `tree` hit too."""
        if self._loop is not None:
            self._counted()
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        family = key[1]
        buckets = self._buckets.get(family)
        if buckets is None:
            buckets = self._buckets[family] = [0] * (len(BUCKETS) + 1)
            self._sums[family] = 0.0
        # Answered from memory: nearly always within the first bucket.
        buckets[0 if seconds <= _FIRST_BOUND else bisect_left(BUCKETS, seconds)] += 1
        self._sums[family] += seconds
        counts = self._cache
        counts[_ANSWER_HIT] = counts.get(_ANSWER_HIT, 0) + 1
        counts[_TREE_HIT] = counts.get(_TREE_HIT, 0) + 1
        tokens = self._tokens
        tokens["none"] = tokens.get("none", 0) + 1
        again = self._tokenless_again
        again[instance_id] = again.get(instance_id, 0) + 1

    def cache_event(self, cache: str, hit: bool) -> None:
        if self._loop is not None:
            self._counted()
        key = (cache, hit)
        counts = self._cache
        counts[key] = counts.get(key, 0) + 1

    def token_event(self, state: str, instance_id: str | None) -> None:
        """Count one identified request by token state (gate.TokenState)."""
        if self._loop is not None:
            self._counted()
        counts = self._tokens
        counts[state] = counts.get(state, 0) + 1
        if instance_id is None or state == "valid":
            return
        counts = self._tokenless_again if state == "none" else self._invalid
        counts[instance_id] = counts.get(instance_id, 0) + 1

    def take_instance_usage(self) -> dict[str, list[int]]:
        """The per-instance [tokenless, invalid token] counts since the last call (event loop
        thread only; the caller persists them)."""
        tokenless, self._tokenless_again = self._tokenless_again, {}
        invalid, self._invalid = self._invalid, {}
        taken = {instance_id: [n, invalid.pop(instance_id, 0)]
                 for instance_id, n in tokenless.items()}
        for instance_id, n in invalid.items():
            taken[instance_id] = [0, n]
        return taken

    def flush(self) -> None:
        """Export what was counted since the last flush into the prometheus_client metrics."""
        with self._flush_lock:
            for state, total in self._tokens.copy().items():
                delta = total - self._done_tokens.get(state, 0)
                if delta:
                    self.tokens.labels(state).inc(delta)
                    self._done_tokens[state] = total
            # dict.copy() is one C call: atomic with respect to the event loop's inserts.
            for key, total in self._requests.copy().items():
                delta = total - self._done_requests.get(key, 0)
                if delta:
                    self.requests.labels(str(key[0]), key[1]).inc(delta)
                    self._done_requests[key] = total
            for (cache, hit), total in self._cache.copy().items():
                delta = total - self._done_cache.get((cache, hit), 0)
                if delta:
                    self.cache.labels(cache, "hit" if hit else "miss").inc(delta)
                    self._done_cache[(cache, hit)] = total
            sums = self._sums.copy()
            for family, counts in self._buckets.copy().items():
                now = list(counts)
                done = self._done_buckets.get(family) or [0] * len(now)
                deltas = [a - b for a, b in zip(now, done, strict=True)]
                if not any(deltas):
                    continue
                # The sums were copied before the counts: requests counted in between add
                # their seconds with the next flush, so the exported sum is exact over time.
                seconds = sums.get(family, 0.0)
                _add_to_histogram(
                    self.latency.labels(family), deltas, seconds - self._done_sums.get(family, 0.0)
                )
                self._done_buckets[family] = now
                self._done_sums[family] = seconds


def render_metrics(registry: CollectorRegistry | None) -> bytes:
    """The exposition text: this process's registry, or every worker's in multiprocess mode."""
    if registry is None:
        merged = CollectorRegistry()
        # prometheus_client leaves this constructor untyped.
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            merged, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
        return generate_latest(merged)
    return generate_latest(registry)
