"""Password hashing with a standard memory-hard KDF (stdlib scrypt), per-user random salt.

Stored form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` so the cost can be raised later
without breaking existing hashes (verification reads the parameters from the string).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading

# RFC 7914 interactive-login parameters: ~16 MiB and tens of milliseconds per check.
N, R, P = 2**14, 8, 1
_DKLEN = 32
_MAXMEM = 64 * 1024 * 1024
# At most this many KDF runs at once in a process: each holds a 16 MiB work buffer, and the
# control-api runs requests on 32 threads, so a burst of logins (agents restarting together)
# would otherwise need 32 x 16 MiB at once. One at a time keeps the API's peak within its
# 100 MB budget (issue 14) and still checks 20-50 passwords a second; tokens are cached by
# every client, so logins are rare.
KDF_SLOTS = 1
_kdf_slots = threading.BoundedSemaphore(KDF_SLOTS)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    with _kdf_slots:
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=_MAXMEM)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode("utf-8"), salt, N, R, P, _DKLEN)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a `hash_password` string."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password.encode("utf-8"), base64.b64decode(salt), int(n), int(r),
                         int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """Checked when the user does not exist, so an unknown name costs the same time as a bad
    password. Made on first use, not at import (the KDF is deliberately slow)."""
    return hash_password(secrets.token_urlsafe(16))
