"""IMDSv2 session tokens: pure issue and verify over bytes and a clock passed in.

    TokenKeys.from_secrets(current, previous) ─► issue_token(keys, instance, now, ttl, nonce)
                                              └► check_token(keys, instance, token, now)

A token is stateless, so every metadata API replica verifies it, also after a restart:

    <expiry, decimal unix seconds> "." <nonce, base64url> "." <HMAC-SHA256, base64url>

The HMAC covers a version tag, the instance uuid, the expiry and the nonce, keyed by a key
derived from the operator's secret. A token is therefore bound to one instance and one expiry;
changing either byte breaks the MAC. Rotation: tokens are issued with the current key and
accepted with the current key or any previous one, so a key can change while guests hold
tokens (keep the old secret in `token_previous_secrets` for at least the longest TTL, 6 h).

Anything longer than `MAX_TOKEN_LENGTH` (or not shaped like a token) is rejected before any
cryptography, so a guest cannot make the server hash megabytes per request.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_TOKEN_LENGTH",
    "BadTtl",
    "MAX_TTL",
    "MIN_TTL",
    "NONCE_BYTES",
    "TokenCheck",
    "TokenKeys",
    "TokenVerifier",
    "check_token",
    "issue_token",
    "parse_ttl",
]

MIN_TTL = 1
MAX_TTL = 21600
NONCE_BYTES = 9
# expiry (at most 11 digits for centuries) + 2 dots + 12 nonce + 43 MAC characters = 68; the
# bound leaves room for a longer expiry but not for anything a real token could never be.
MAX_TOKEN_LENGTH = 96
_VERSION = b"openimds-imds-token-v1"


@dataclass(frozen=True)
class TokenKeys:
    """The key tokens are issued with, then the keys still accepted (rotation)."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    @classmethod
    def from_secrets(cls, current: str, previous: Iterable[str] = ()) -> TokenKeys:
        """Derive keys from operator secrets (a derived key never equals the secret itself,
        so reusing the proxy shared secret here cannot turn a token MAC into a signature)."""
        return cls(_derive(current), tuple(_derive(p) for p in previous if p))

    @property
    def accepted(self) -> tuple[bytes, ...]:
        return (self.current, *self.previous)


def _derive(secret: str) -> bytes:
    return hmac.new(secret.encode(), _VERSION, hashlib.sha256).digest()


class TokenCheck(enum.Enum):
    VALID = "valid"
    # Not a token of ours, for another instance, or made with a key no longer accepted.
    INVALID = "invalid"
    EXPIRED = "expired"


class BadTtl(ValueError):
    """The TTL header is missing or not an integer in 1..21600."""


def parse_ttl(values: list[str]) -> int:
    """The TTL from the `X-aws-ec2-metadata-token-ttl-seconds` values a request carried."""
    if len(values) != 1:
        raise BadTtl("missing" if not values else "sent more than once")
    text = values[0].strip()
    # isdigit() alone accepts non-ASCII digits ("²"); int() accepts "+5" and "1_0".
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise BadTtl(f"{values[0]!r} is not a whole number of seconds")
    ttl = int(text)
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise BadTtl(f"{ttl} is outside {MIN_TTL}..{MAX_TTL}")
    return ttl


def _mac(key: bytes, instance_id: str, expiry: bytes, nonce: bytes) -> bytes:
    message = b"\0".join((_VERSION, instance_id.encode(), expiry, nonce))
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def issue_token(keys: TokenKeys, instance_id: str, now: float, ttl: int, nonce: bytes) -> str:
    """A token for `instance_id` valid until `now + ttl` (ttl already checked by parse_ttl)."""
    expiry = str(int(now) + ttl).encode()
    nonce_text = _b64(nonce)
    mac = _b64(_mac(keys.current, instance_id, expiry, nonce_text))
    return b".".join((expiry, nonce_text, mac)).decode()


def check_token(keys: TokenKeys, instance_id: str, token: str, now: float) -> TokenCheck:
    """Whether `token` was issued for `instance_id` by one of `keys` and is still valid."""
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return TokenCheck.INVALID
    parts = token.encode().split(b".")
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
        return TokenCheck.INVALID
    expiry, nonce_text, mac_text = parts
    try:
        mac = base64.urlsafe_b64decode(mac_text + b"=" * (-len(mac_text) % 4))
    except (binascii.Error, ValueError):
        return TokenCheck.INVALID
    if len(mac) != hashlib.sha256().digest_size:
        return TokenCheck.INVALID
    for key in keys.accepted:
        if hmac.compare_digest(mac, _mac(key, instance_id, expiry, nonce_text)):
            # Checked after the MAC, so a forged expiry says nothing about the key.
            return TokenCheck.VALID if now < int(expiry) else TokenCheck.EXPIRED
    return TokenCheck.INVALID


class TokenVerifier:
    """`check_token` for one set of keys, remembering tokens that verified.

    Clients reuse a token for many requests (cloud-init and ec2-metadata for hours), so the
    HMAC runs once per token instead of once per request; a hit still checks the instance and
    the expiry. Only valid tokens are remembered, so garbage cannot push real entries out; the
    oldest entry goes when `size` is reached, and an expired one when it is next seen.
    """

    __slots__ = ("_keys", "_seen", "_size")

    def __init__(self, keys: TokenKeys, size: int = 65536) -> None:
        self._keys = keys
        self._size = size
        self._seen: dict[str, tuple[str, int]] = {}

    def check(self, instance_id: str, token: str, now: float) -> TokenCheck:
        seen = self._seen.get(token)
        if seen is not None:
            if seen[0] != instance_id:
                return TokenCheck.INVALID
            if now < seen[1]:
                return TokenCheck.VALID
            del self._seen[token]
            return TokenCheck.EXPIRED
        result = check_token(self._keys, instance_id, token, now)
        if result is TokenCheck.VALID:
            if len(self._seen) >= self._size:
                del self._seen[next(iter(self._seen))]
            self._seen[token] = (instance_id, int(token.split(".", 1)[0]))
        return result
