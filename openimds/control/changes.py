"""`GET /v2.0/changes?since=N&timeout=S[&limit=L]`: the inventory's change feed, long-polled.

Answer: ``{"changes": [{revision, resource, resource_id, op}...], "revision": R,
"current_revision": C}``. Pass R as the next `since`. C is the store's revision read *before*
the fetch: a watcher that starts with a full listing reads C first (``limit=0``), lists, then
watches from C, so a change committed during the listing is never missed.
Only the `admin` and `service` roles may read the feed (it names every project's resources).
"""

from __future__ import annotations

from openimds.control.call import Call, Reply
from openimds.control.errors import BadRequest, Forbidden

MAX_LIMIT = 1000


def _number(call: Call, key: str, default: float, *, integer: bool) -> float:
    text = call.query_one(key)
    if text is None or text == "":
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise BadRequest(f"Invalid {key}={text!r}: expected a number") from None
    if value < 0 or value != value or value > 2**62:  # negative, NaN, or beyond SQL integers
        raise BadRequest(f"Invalid {key}={text!r}: must be between 0 and 2**62")
    return value


def get_changes(call: Call) -> Reply:
    if not call.context.reads_all:
        raise Forbidden("The change feed needs the admin or service role.")
    since = int(_number(call, "since", 0, integer=True))
    timeout = min(_number(call, "timeout", 0.0, integer=False), call.settings.max_changes_timeout)
    limit = int(min(_number(call, "limit", MAX_LIMIT, integer=True), MAX_LIMIT))
    current = call.store.current_revision()
    changes = call.store.changes_since(since, timeout, limit) if limit else []
    revision = changes[-1].revision if changes else since
    return Reply(200, {"changes": [c.as_dict() for c in changes], "revision": revision,
                       "current_revision": current})
