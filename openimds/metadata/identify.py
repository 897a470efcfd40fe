"""Who is asking: pure identification from headers, peer address and options (spec section 11).

Three modes, chosen by configuration and headers only:

* proxy mode (`service_metadata_proxy` true): a signed `X-Instance-ID` plus `X-Tenant-ID`;
* provider mode (proxy mode with a non-empty `X-Metadata-Provider`): a signed provider id plus
  the first `X-Forwarded-For` address;
* direct mode (`service_metadata_proxy` false): the TCP peer, or the `X-Forwarded-For` entry
  added by a trusted proxy.

Headers are multi-valued on purpose: WSGI joins repeated headers, hiding a duplicate identity
header; here a duplicate is a 400. Lookups in the inventory happen later, in `respond.py`.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from openimds.metadata.errors import (
    BadSignature,
    DuplicateHeader,
    InternalError,
    InvalidHeader,
    MissingHeader,
)
from openimds.wire import (
    FORWARDED_FOR,
    INSTANCE_ID,
    INSTANCE_ID_SIGNATURE,
    PROVIDER,
    PROVIDER_SIGNATURE,
    TENANT_ID,
    sign_instance_id,
    verify_signature,
)

__all__ = [
    "ByAddress",
    "ByInstanceId",
    "ByProvider",
    "Headers",
    "IdentifySettings",
    "Identity",
    "SignatureCache",
    "identify",
    "is_trusted",
    "parse_trusted_proxies",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Lower-cased once: `identify` reads `Headers._values` directly (it runs on every request).
_KEY = {
    name: name.lower()
    for name in (INSTANCE_ID, INSTANCE_ID_SIGNATURE, TENANT_ID, PROVIDER, PROVIDER_SIGNATURE,
                 FORWARDED_FOR)
}


class Headers:
    """Case-insensitive, multi-valued view over (name, value) pairs as they arrived."""

    __slots__ = ("_values",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            values.setdefault(name.lower(), []).append(value)
        self._values = values

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name.lower(), [])

    def get(self, name: str) -> str | None:
        found = self._values.get(name.lower())
        return found[0] if found else None


@dataclass(frozen=True)
class IdentifySettings:
    service_metadata_proxy: bool = True
    shared_secret: str = ""
    # Peers whose X-Forwarded-For is believed in direct mode (addresses or CIDRs).
    trusted_proxies: tuple[IpNetwork, ...] = ()


# Built per request on the hot path: a NamedTuple is as immutable as a frozen dataclass and
# about four times cheaper to construct.
class ByInstanceId(NamedTuple):
    instance_id: str
    tenant_id: str
    # The raw X-Forwarded-For (nova's request address: the local-ipv4 fallback only).
    request_address: str | None


class ByProvider(NamedTuple):
    provider: str
    address: str


class ByAddress(NamedTuple):
    address: str


Identity = ByInstanceId | ByProvider | ByAddress




class SignatureCache:
    """`verify_signature` for one secret, remembering the expected HMAC of verified values.

    The secret is fixed for the life of a process, so HMAC(value) never changes: computing it
    once per instance instead of once per request saves ~3 µs. Every request is still compared
    in constant time against the expected value. Only values that passed once are remembered,
    so requests with made-up ids and bad signatures cannot push real entries out; the oldest
    entry goes when `size` is reached.
    """

    __slots__ = ("_expected", "_secret", "_size")

    def __init__(self, secret: str, size: int = 65536) -> None:
        self._secret = secret
        self._size = size
        self._expected: dict[str, bytes] = {}

    def verify(self, value: str, signature: str) -> bool:
        received = signature.encode("utf-8", "surrogateescape")
        expected = self._expected.get(value)
        if expected is not None:
            return hmac.compare_digest(expected, received)
        expected = sign_instance_id(self._secret, value).encode()
        if not hmac.compare_digest(expected, received):
            return False
        if len(self._expected) >= self._size:
            # dicts keep insertion order: drop the oldest.
            del self._expected[next(iter(self._expected))]
        self._expected[value] = expected
        return True


def parse_trusted_proxies(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Validate `[api] trusted_proxies` at startup; a typo must stop the service, not open it."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value)


def _text(name: str, value: str) -> str:
    """`value` if it is text; InvalidHeader (400) if it carries bytes that are not UTF-8.

    aiohttp decodes header bytes as UTF-8 with surrogateescape, so undecodable bytes arrive as
    lone surrogates that no encoder (HMAC key, SQL driver, response body) accepts. Checked once
    here for every value identification passes on, so nothing later can fail on them.
    """
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidHeader(name) from None
    return value


def _single(headers: Headers, name: str) -> str | None:
    values = headers._values.get(_KEY[name])
    if not values:
        return None
    if len(values) > 1:
        raise DuplicateHeader(name)
    return _text(name, values[0])


def is_trusted(address: str, trusted: Sequence[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def _direct_address(headers: Headers, peer: str | None, settings: IdentifySettings) -> str:
    if not peer:
        raise InternalError(log_detail="direct mode: the caller's address is unknown")
    if not is_trusted(peer, settings.trusted_proxies):
        return peer
    hops = [
        h.strip()
        for value in headers.get_all(FORWARDED_FOR)
        for h in _text(FORWARDED_FOR, value).split(",")
    ]
    hops = [h for h in hops if h]
    # Walk from the nearest hop back: the first address we do not trust is the caller, so a
    # guest cannot choose its identity by prepending entries to the header.
    for hop in reversed(hops):
        if not is_trusted(hop, settings.trusted_proxies):
            return hop
    return hops[0] if hops else peer


def identify(
    headers: Headers,
    peer: str | None,
    settings: IdentifySettings,
    signatures: SignatureCache | None = None,
) -> Identity:
    """The caller's identity claim, or a MetadataError (400 header, 403 signature, 500 address).

    `signatures`, when given, must have been built with `settings.shared_secret`.
    """
    verify = (
        signatures.verify
        if signatures is not None
        else lambda value, sig: verify_signature(settings.shared_secret, value, sig)
    )
    if not settings.service_metadata_proxy:
        return ByAddress(_direct_address(headers, peer, settings))

    provider = _single(headers, PROVIDER)
    if provider:
        forwarded = headers.get_all(FORWARDED_FOR)
        if not forwarded:
            # Nova's wording for this one differs from the proxy-mode headers.
            raise MissingHeader(FORWARDED_FOR, "X-Forwarded-For is missing from request.")
        address = _text(FORWARDED_FOR, ", ".join(forwarded)).split(",")[0]
        if settings.shared_secret:
            signature = _single(headers, PROVIDER_SIGNATURE)
            if not signature or not verify(provider, signature):
                raise BadSignature(log_detail=f"provider {provider!r}: bad or missing signature")
        return ByProvider(provider=provider, address=address)

    # Missing headers are reported in nova's order before any duplicate.
    values = headers._values
    for name in (INSTANCE_ID, INSTANCE_ID_SIGNATURE, TENANT_ID):
        if not values.get(_KEY[name]):
            raise MissingHeader(name)
    instance_id = _single(headers, INSTANCE_ID)
    tenant_id = _single(headers, TENANT_ID)
    signature = _single(headers, INSTANCE_ID_SIGNATURE)
    assert instance_id is not None and tenant_id is not None and signature is not None
    if not signature or not verify(instance_id, signature):
        # Only the received value is logged: the expected HMAC is a forgery oracle (LP 2150094).
        raise BadSignature(
            log_detail=f"instance {instance_id!r}: signature {signature!r} does not match"
        )
    hops = values.get(_KEY[FORWARDED_FOR])
    return ByInstanceId(
        instance_id=instance_id,
        tenant_id=tenant_id,
        request_address=_text(FORWARDED_FOR, ", ".join(hops)) if hops else None,
    )
