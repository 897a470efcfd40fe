"""Answers kept as response bytes, and the requests they may answer again.

    slow path: request ─► Responder ─► MetadataResponse(reuse=Reuse(view, today, seeded))
                                             │ (fastserver.py keeps it)
                                             ▼
    fast path: raw request ─► plain_identity ─► AnswerCache.get ─► valid_for ─► head + body

The Responder marks an answer reusable (`respond.Reuse`) when nothing but the instance's view,
the date, the method, the path and the signed identity decided it. The fast server keeps it here
as bytes under the request's raw (method, target, X-Instance-ID, X-Tenant-ID), with the
signature that request carried, and answers later requests with the same key without the
Responder. A kept answer is given again only while

* the source still hands out the very view object it was rendered from (`CachedViews.
  cached_view`): every change the feed applies to the instance, its ports, subnets, networks or
  key pair, a password POST and a metadata options change replace or drop that object;
* the date is the one it was rendered on (the OpenStack version listing depends on it);
* the request carries the same signature (checked in constant time), exactly one of each
  identity header, no provider headers and no session token (`plain_identity`).

Anything else goes to the Responder, which decides as always. Besides the identity check,
the source's forget listener drops an instance's answers as soon as the feed drops its view,
so a changed instance holds no memory here. meta_data.json's `random_seed` is spliced in
fresh per response (`Answer.body`), from the same entropy pool as the slow path.

Pure: no sockets, no clock, no logging; the fast server does the I/O.
"""

from __future__ import annotations

import binascii
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import date

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from openimds.metadata.gate import GUEST_FORWARDED_HEADER, TOKEN_HEADER, TTL_HEADER
from openimds.metadata.respond import RANDOM_SEED_BYTES
from openimds.metadata.view import InstanceView
from openimds.wire import (
    FORWARDED_FOR,
    INSTANCE_ID,
    INSTANCE_ID_SIGNATURE,
    PROVIDER,
    PROVIDER_SIGNATURE,
    TENANT_ID,
)

__all__ = [
    "Answer", "AnswerCache", "AnswerKey", "SeedPool", "encoded_seeds", "keystream", "plain_identity",
]

# (method, raw request target, raw X-Instance-ID, raw X-Tenant-ID)
AnswerKey = tuple[str, bytes, bytes, bytes]

# What a header does to a kept answer.
_OTHER = 0  # nothing (Host, User-Agent, Accept: only error bodies depend on it)
_INSTANCE = 1
_TENANT = 2
_SIGNATURE = 3
# X-Forwarded-For: plays no part in a reusable answer, but must be text (a 400 otherwise).
_FORWARDED = 4
# Decides the answer in a way a kept one does not know: the Responder must see the request.
_SLOW = 5

_ROLES: dict[bytes, int] = {
    INSTANCE_ID.lower().encode(): _INSTANCE,
    TENANT_ID.lower().encode(): _TENANT,
    INSTANCE_ID_SIGNATURE.lower().encode(): _SIGNATURE,
    FORWARDED_FOR.lower().encode(): _FORWARDED,
    PROVIDER.lower().encode(): _SLOW,
    PROVIDER_SIGNATURE.lower().encode(): _SLOW,
    TOKEN_HEADER.lower().encode(): _SLOW,
    TTL_HEADER.lower().encode(): _SLOW,
    GUEST_FORWARDED_HEADER.lower().encode(): _SLOW,
}
# Header names as sent (any case) -> role; bounded, as names are the client's choice.
_SEEN: dict[bytes, int] = {}
_SEEN_LIMIT = 1024


def _role(name: bytes) -> int:
    role = _SEEN.get(name)
    if role is not None:
        return role
    # llhttp accepts only token characters in names; anything else is left to the Responder.
    role = _ROLES.get(name.lower(), _OTHER) if name.isascii() else _SLOW
    if len(_SEEN) < _SEEN_LIMIT:
        _SEEN[name] = role
    return role


def plain_identity(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bytes, bytes] | None:
    """(instance id, tenant id, signature) of a request signed the plain proxy-mode way, as
    sent; None when anything else (a duplicate, a provider, a token) could change its answer."""
    instance = tenant = signature = None
    for name, value in headers:
        role = _SEEN.get(name)
        if role is None:
            role = _role(name)
        if not role:
            continue
        if role == _INSTANCE:
            if instance is not None:
                return None
            instance = value
        elif role == _TENANT:
            if tenant is not None:
                return None
            tenant = value
        elif role == _SIGNATURE:
            if signature is not None:
                return None
            signature = value
        elif role == _FORWARDED:
            if not value.isascii():
                return None
        else:
            return None
    if instance is None or tenant is None or signature is None:
        return None
    return instance, tenant, signature


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# A random byte -> a base64 character, by its low 6 bits: each character is uniform.
_TO_B64 = bytes(_B64[b & 63] for b in range(256))
# The third character of a final 2-byte group holds 4 bits; its low 2 bits are zero.
_LAST_OF_TWO = [bytes([_B64[_B64.index(c) & 0b111100]]) if c in _B64 else b"" for c in range(256)]
# 512 bytes: 170 whole 3-byte groups (680 characters), then 2 bytes as 3 characters and "=".
_SEED_CHARS = (RANDOM_SEED_BYTES // 3) * 4 + 3
# The whole text: those characters and the "=".
_SEED_TEXT = _SEED_CHARS + 1


def keystream(n: int) -> bytes:
    """`n` bytes of ChaCha20 keystream under a fresh key from the kernel: the construction of the
    kernel's own CRNG behind getrandom(2), run by OpenSSL's vectorised ChaCha20 at ~5x the
    rate of os.urandom here (0.3-0.8 ms against 3.5 ms a MiB), and never used twice."""
    cipher = Cipher(algorithms.ChaCha20(os.urandom(32), os.urandom(16)), mode=None)
    return cipher.encryptor().update(bytes(n))


class SeedPool:
    """meta_data.json's `random_seed`: the base64 text of 512 fresh random bytes per call.

    The texts are made from random bytes read `size` at a time (ChaCha20 keystream, `keystream`),
    one random byte per base64 character (its low 6 bits), so no base64 encoder runs: the result
    is a uniformly drawn canonical encoding of 512 random bytes, exactly what
    `base64.b64encode(os.urandom(512))` yields. Each read is laid out as whole texts at once
    (the final group's two characters fixed per text), so a call is one slice. No byte is used
    twice.
    """

    __slots__ = ("_pool", "_position", "_size", "_urandom")

    def __init__(self, urandom: Callable[[int], bytes] = keystream,
                 size: int = 256 * _SEED_CHARS) -> None:
        self._urandom = urandom
        # Random bytes per read: whole texts, each taking one per character but the "=".
        self._size = max(size, _SEED_CHARS) // _SEED_CHARS * _SEED_CHARS
        self._pool = b""
        self._position = 0

    def _refill(self) -> None:
        chars = self._urandom(self._size).translate(_TO_B64)
        texts = len(chars) // _SEED_CHARS
        pool = bytearray(texts * _SEED_TEXT)
        for text in range(texts):
            at = text * _SEED_TEXT
            last = at + _SEED_CHARS - 1
            pool[at:last] = chars[text * _SEED_CHARS : text * _SEED_CHARS + _SEED_CHARS - 1]
            pool[last] = _LAST_OF_TWO[chars[text * _SEED_CHARS + _SEED_CHARS - 1]][0]
            pool[last + 1] = 61  # "="
        self._pool = bytes(pool)
        self._position = 0

    def __call__(self) -> bytes:
        start = self._position
        end = start + _SEED_TEXT
        if end > len(self._pool):
            self._refill()
            start, end = 0, _SEED_TEXT
        self._position = end
        return self._pool[start:end]


class Answer:
    """One kept response: `head` is the status line and headers as `LeanServer` takes them."""

    __slots__ = (
        "body",
        "family",
        "fields",
        "head",
        "log_entry",
        "metric_key",
        "signature",
        "size",
        "status",
        "suffix",
        "today",
        "uuid",
        "view",
    )

    def __init__(
        self,
        *,
        view: InstanceView,
        today: date,
        signature: bytes,
        head: bytes,
        body: bytes,
        suffix: bytes | None,
        status: int,
        family: str,
        fields: tuple[str, str, int, int, str, str],
    ) -> None:
        self.view = view
        self.uuid = view.uuid
        self.today = today
        self.signature = signature
        self.head = head
        # The whole body, or meta_data.json up to its random_seed (then `suffix` after it).
        self.body = body
        self.suffix = suffix
        self.status = status
        self.family = family
        self.metric_key = (status, family)
        # (method, target, status, size, instance, outcome) of the access log line, and the
        # part of the line they make, formatted once.
        self.fields = fields
        self.size = fields[3]
        method, target, status_, size, instance, outcome = fields
        # `AccessLog`'s format, from the method to the outcome.
        self.log_entry = f'"{method} {target}" {status_:d} {size:d} instance={instance} outcome={outcome}'


    def content(self, seed: Callable[[], bytes]) -> bytes:
        """The body of one response: a fresh random_seed (base64 text, `SeedPool`) in
        meta_data.json, as nova does."""
        suffix = self.suffix
        if suffix is None:
            return self.body
        return b"".join((self.body, seed(), suffix))


def encoded_seeds(random_bytes: Callable[[int], bytes]) -> Callable[[], bytes]:
    """`random_seed` texts from a given entropy source (tests, a custom pool)."""

    def seed() -> bytes:
        return binascii.b2a_base64(random_bytes(RANDOM_SEED_BYTES), newline=False)

    return seed


class AnswerCache:
    """Answers by `AnswerKey`, at most `size` of them (the oldest goes first)."""

    __slots__ = ("_answers", "_by_instance", "_size", "get")

    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._answers: OrderedDict[AnswerKey, Answer] = OrderedDict()
        self._by_instance: dict[str, set[AnswerKey]] = {}
        # The hot path's lookup, bound once.
        self.get = self._answers.get

    def __len__(self) -> int:
        return len(self._answers)

    def put(self, key: AnswerKey, answer: Answer) -> None:
        if self._size <= 0:
            return
        answers = self._answers
        if key in answers:
            self._discard(key)
        while len(answers) >= self._size:
            self._discard(next(iter(answers)))
        answers[key] = answer
        self._by_instance.setdefault(answer.uuid, set()).add(key)

    def _discard(self, key: AnswerKey) -> None:
        answer = self._answers.pop(key, None)
        if answer is None:
            return
        keys = self._by_instance.get(answer.uuid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_instance[answer.uuid]

    def discard(self, key: AnswerKey, answer: Answer) -> None:
        """Drop `key` if it still holds `answer` (found stale by the hot path)."""
        if self._answers.get(key) is answer:
            self._discard(key)

    def drop_instance(self, uuid: str) -> None:
        """Forget every answer of `uuid` (its view was dropped or replaced)."""
        keys = self._by_instance.pop(uuid, None)
        if keys:
            answers = self._answers
            for key in keys:
                answers.pop(key, None)

    def clear(self) -> None:
        self._answers.clear()
        self._by_instance.clear()
