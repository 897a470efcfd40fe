"""Every way an agent request can fail, as closed types mapped to HTTP at one edge (server.py).

    AgentError (status, text)
    ├── BadRequest (400)
    │   ├── ConflictingIds        both X-Neutron-Network-ID and X-Neutron-Router-ID, or one repeated
    │   ├── MissingId             neither id header (the request did not come through our proxy)
    │   ├── BadAddress            no usable X-Forwarded-For hop
    │   └── BadTarget             CONNECT, `*`, a target that names no path or holds control
    │                             characters
    ├── NotFound (404)
    │   ├── NoPort                no port with that address on the network(s)
    │   ├── AmbiguousAddress      more than one port with that address (an inventory problem)
    │   ├── NotAnInstance         the port belongs to a DHCP server, a router, ...
    │   └── RouterWithoutNetworks the router has no interfaces (never a search of all networks)
    ├── UnforwardableIdentity (500) the inventory's instance/project id is no valid header value
    ├── TooManyRequests (429, Retry-After)  this guest is over its token bucket (ratelimit.py)
    └── Unavailable (503, Retry-After)
        ├── NotReady              the port index has not synchronised yet
        └── UpstreamUnavailable   no metadata API answered (refused, reset, timed out)

`text` is what the guest sees (plain text, like Neutron's socket-era pages); `log_detail` is for
the operator's log only (port ids, which upstream failed).
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AmbiguousAddress",
    "BadAddress",
    "BadRequest",
    "BadTarget",
    "ConflictingIds",
    "MissingId",
    "NoPort",
    "NotAnInstance",
    "NotFound",
    "NotReady",
    "RouterWithoutNetworks",
    "TooManyRequests",
    "Unavailable",
    "UnforwardableIdentity",
    "UpstreamUnavailable",
]


class AgentError(Exception):
    status: int = 500

    def __init__(self, text: str, *, log_detail: str | None = None) -> None:
        self.text = text
        self.log_detail = log_detail
        super().__init__(text)


class BadRequest(AgentError):
    status = 400


class ConflictingIds(BadRequest):
    pass


class MissingId(BadRequest):
    pass


class BadAddress(BadRequest):
    pass


class BadTarget(BadRequest):
    pass


class NotFound(AgentError):
    status = 404


class NoPort(NotFound):
    pass


class AmbiguousAddress(NotFound):
    def __init__(self, text: str, port_ids: tuple[str, ...], *, log_detail: str | None = None
                 ) -> None:
        super().__init__(text, log_detail=log_detail)
        self.port_ids = port_ids


class NotAnInstance(NotFound):
    pass


class RouterWithoutNetworks(NotFound):
    pass


class UnforwardableIdentity(AgentError):
    """The inventory holds an instance or project id that is not a valid header value."""


class Unavailable(AgentError):
    status = 503
    # Seconds a client should wait; cloud-init retries on its own schedule anyway.
    retry_after = 5


class NotReady(Unavailable):
    pass


class UpstreamUnavailable(Unavailable):
    pass


class TooManyRequests(AgentError):
    """The guest (network, port) spent its burst; `retry_after` says when a token is back."""

    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many metadata requests from this address; retry after {retry_after} s."
        )
        self.retry_after = retry_after
