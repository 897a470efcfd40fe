"""When a distributed metadata port stops being the route (pure; shared by the control plane,
the DHCP agent and the l2-agent).

Switching `metadata_mode` from `distributed` back to `network_node` cannot take the
`qmeta-<network>` namespaces away at once: every guest leased before the switch holds option
121 "169.254.169.254/32 via <the metadata port>" until it renews. So the control plane does not
delete the port; it marks it *retiring* in its `binding:profile`
(`{"openimds_metadata_retiring_until": "<UTC time>"}`, switch time + dhcp_lease_duration,
"never" for infinite leases). While it retires:

* the DHCP agents route new leases and renewals the network_node way (the port no longer
  counts as the network's distributed metadata port, `dhcp.plan.metadata_mode_of`);
* the l2-agents keep serving the old route from their qmeta- namespaces, until the deadline;
* at the deadline every lease that named the port has expired or renewed, so the l2-agents
  remove their namespaces (they requeue the network for that moment) and the control plane
  deletes the port. Switching back to `distributed` before then clears the mark (same address).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["NEVER", "RETIRING_KEY", "retire_deadline", "retired", "retiring_until"]

RETIRING_KEY = "openimds_metadata_retiring_until"
NEVER = "never"


def retire_deadline(now: datetime, lease_seconds: int) -> str:
    """The mark written at the switch: when the last lease naming the port ends."""
    if lease_seconds < 0:
        return NEVER
    return (now + timedelta(seconds=lease_seconds)).astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def retiring_until(profile: Mapping[str, Any] | None) -> datetime | str | None:
    """None: the port is live. NEVER, or the UTC deadline, when it retires. A mark that does
    not parse counts as a deadline already past (the port goes rather than lingers)."""
    if not profile or RETIRING_KEY not in profile:
        return None
    value = profile[RETIRING_KEY]
    if value == NEVER:
        return NEVER
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def retired(profile: Mapping[str, Any] | None, now: datetime) -> bool:
    """True once a retiring port's deadline has passed (it serves nobody any more)."""
    until = retiring_until(profile)
    return isinstance(until, datetime) and until <= now
