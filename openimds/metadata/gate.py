"""The session-token gate in front of both trees (IMDSv2 semantics), pure.

Runs after the caller is identified and before its path is looked up:

    http_endpoint disabled                         → 403 EndpointDisabled (every request)
    /latest/api/token, method other than PUT       → 405 MethodNotAllowed
    token PUT that came with a guest X-Forwarded-For → 403 TokenForwarded (the SSRF rule)
    token PUT, TTL header missing or not 1..21600  → 400 BadTokenTtl
    token PUT                                      → 200, the token, the TTL echoed
    any other request with a token header          → valid: served; invalid/expired/another
                                                     instance's: 401 InvalidToken (any mode)
    any other request without one                  → optional: served; required: 401

The token PUT's answer also carries `HOP_LIMIT_HEADER`, an internal header the namespace proxy
turns into the IP TTL of that answer and never shows the guest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import NamedTuple

from openimds.metadata import errors as e
from openimds.metadata.options import MetadataOptions
from openimds.metadata.tokens import (
    NONCE_BYTES,
    BadTtl,
    TokenCheck,
    TokenKeys,
    TokenVerifier,
    issue_token,
    parse_ttl,
)
from openimds.wire import GUEST_FORWARDED_HEADER, HOP_LIMIT_HEADER, TOKEN_HEADER, TTL_HEADER

__all__ = [
    "GUEST_FORWARDED_HEADER",
    "HOP_LIMIT_HEADER",
    "TOKEN_HEADER",
    "TOKEN_PATH",
    "TTL_HEADER",
    "IssuedToken",
    "TokenState",
    "check_request",
    "issue",
    "over_ipv6",
]

# Set by the namespace proxy (after deleting any copy the guest sent) when the guest's request
# carried X-Forwarded-For; forwarded by the agent.
# Answer header read and removed by the namespace proxy: the IP TTL for this response.
TOKEN_PATH = ["latest", "api", "token"]

_TOKEN_KEY = TOKEN_HEADER.lower()
_TTL_KEY = TTL_HEADER.lower()


class TokenState:
    """How a request stood with respect to tokens, for counters (plain strings)."""

    NONE = "none"
    VALID = "valid"
    INVALID = "invalid"


class IssuedToken(NamedTuple):
    token: str
    ttl: int
    hop_limit: int

    def headers(self) -> tuple[tuple[str, str], ...]:
        return ((TTL_HEADER, str(self.ttl)), (HOP_LIMIT_HEADER, str(self.hop_limit)))


def issue(
    method: str,
    values: dict[str, list[str]],
    forwarded: bool,
    options: MetadataOptions,
    keys: TokenKeys,
    instance_id: str,
    now: float,
    random_bytes: Callable[[int], bytes],
) -> IssuedToken:
    """Answer `/latest/api/token` (`values`: lower-cased header name → values)."""
    if method.upper() != "PUT":
        raise e.MethodNotAllowed()
    if forwarded:
        raise e.TokenForwarded(log_detail=f"instance {instance_id}: token PUT with X-Forwarded-For")
    try:
        ttl = parse_ttl(values.get(_TTL_KEY, []))
    except BadTtl as exc:
        raise e.BadTokenTtl(log_detail=f"instance {instance_id}: TTL {exc}") from exc
    token = issue_token(keys, instance_id, now, ttl, random_bytes(NONCE_BYTES))
    return IssuedToken(token, ttl, options.http_put_response_hop_limit)


def over_ipv6(request_address: str) -> bool:
    """Whether the guest's address (the agent's X-Forwarded-For, or the peer) is IPv6; an
    IPv4-mapped address is IPv4."""
    if ":" not in request_address:
        return False
    try:
        addr = ipaddress.ip_address(request_address.split(",")[-1].strip())
    except ValueError:
        return False
    return isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None


def check_request(
    values: dict[str, list[str]],
    options: MetadataOptions,
    verifier: TokenVerifier,
    instance_id: str,
    now: float,
) -> str:
    """The TokenState of a request that may be served, or Unauthorized."""
    sent = values.get(_TOKEN_KEY)
    if not sent:
        if options.http_tokens == "required":
            raise e.TokenRequired()
        return TokenState.NONE
    if len(sent) > 1:
        raise e.InvalidToken(log_detail=f"instance {instance_id}: {len(sent)} token headers")
    result = verifier.check(instance_id, sent[0], now)
    if result is not TokenCheck.VALID:
        raise e.InvalidToken(log_detail=f"instance {instance_id}: token {result.value}")
    return TokenState.VALID
