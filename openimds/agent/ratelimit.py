"""Per-instance rate limiting in the agent: one token bucket per (network, guest port).

Why here and not in haproxy's stick tables (Neutron's `[metadata_rate_limiting]` limiter, which
openimds still renders when asked): the agent is the first hop that knows *which* network a
request comes from (a router's proxy serves several), it sees IPv4 and IPv6 guests alike (a
stick table holds one family), a token bucket lets a boot's burst through while capping the
sustained rate (stick tables count requests in a sliding window, so a boot that crawls fast
looks like abuse), and its counters reach /metrics. It runs after resolution, so the key is
the port's own network and its id: a guest's IPv4, global IPv6 and link-local addresses share
one budget; unresolvable requests cost no upstream call and are not counted.

    TokenBuckets(BucketPolicy(rate, burst)).take(key, now) -> Decision    pure: no clock, no I/O

`now` is passed in (monotonic seconds). Buckets that have refilled to `burst` carry no
information and are dropped by `prune`, so memory follows the number of recently active guests.
With several agent workers each has its own buckets: a guest's ceiling is then at most
workers x the configured one, which errs on the side of answering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["BucketPolicy", "Decision", "TokenBuckets", "retry_after_header"]


@dataclass(frozen=True)
class BucketPolicy:
    """`rate` requests per second sustained, `burst` at once (the bucket's size)."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, not {self.rate}/{self.burst}")


class Decision(NamedTuple):
    allowed: bool
    retry_after: float  # seconds until the next token (0 when allowed)
    newly_limited: bool  # the first refusal since this key was last allowed (log once)


class TokenBuckets:
    """Buckets by key; `take` spends one token or says how long to wait."""

    def __init__(self, policy: BucketPolicy, *, prune_every: int = 4096) -> None:
        self.policy = policy
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, at)
        self._limited: set[object] = set()
        self._prune_every = prune_every
        self._since_prune = 0
        self.allowed = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def limited_count(self) -> int:
        return len(self._limited)

    def take(self, key: object, now: float) -> Decision:
        p = self.policy
        tokens, at = self._buckets.get(key, (float(p.burst), now))
        tokens = min(float(p.burst), tokens + max(0.0, now - at) * p.rate)
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self.prune(now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._limited.discard(key)
            self.allowed += 1
            return Decision(True, 0.0, False)
        self._buckets[key] = (tokens, now)
        newly = key not in self._limited
        self._limited.add(key)
        self.refused += 1
        return Decision(False, (1.0 - tokens) / p.rate, newly)

    def prune(self, now: float) -> None:
        """Forget buckets that are full again (they would start full anyway)."""
        p = self.policy
        self._since_prune = 0
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * p.rate >= p.burst]
        for k in full:
            del self._buckets[k]
            self._limited.discard(k)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110): round up, never 0 for a refusal."""
    return str(max(1, math.ceil(seconds)))
