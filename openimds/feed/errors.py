"""What a change feed may raise; anything else is a bug and propagates.

```
FeedError
 ├── FeedUnavailable   the control plane cannot be reached, refused our credentials, or
 │                     failed (5xx): keep what is in place, back off, retry
 └── FeedGap           the feed cannot replay from the revision asked for (history pruned,
                       or the control plane's revision went backwards): resync from a listing
```
"""

from __future__ import annotations

__all__ = ["FeedError", "FeedGap", "FeedUnavailable"]


class FeedError(Exception):
    """Base of what a ChangeFeed may raise."""


class FeedUnavailable(FeedError):
    """The control plane cannot be reached, refused our credentials, or failed (5xx)."""


class FeedGap(FeedError):
    """The feed cannot replay from the requested revision (pruned history): resync."""
