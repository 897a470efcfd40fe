"""Session tokens (tokens.py): issue and verify, table-tested over bytes and a fixed clock."""

from __future__ import annotations

import pytest

from openimds.metadata.tokens import (
    MAX_TOKEN_LENGTH,
    BadTtl,
    TokenCheck,
    TokenKeys,
    TokenVerifier,
    check_token,
    issue_token,
    parse_ttl,
)

A = "b65cee2f-8c69-4aeb-be2f-f79742548fc2"
B = "5c1e4e2a-0f0b-4c59-9e65-5a1b8d0a0c11"
NOW = 1_800_000_000.0
KEYS = TokenKeys.from_secrets("current-secret")
NONCE = b"\x01" * 9


def token(keys: TokenKeys = KEYS, instance: str = A, ttl: int = 60) -> str:
    return issue_token(keys, instance, NOW, ttl, NONCE)


@pytest.mark.parametrize(
    ("values", "ttl"),
    [(["1"], 1), (["21600"], 21600), ([" 300 "], 300), (["00060"], 60)],
)
def test_ttl_accepted(values: list[str], ttl: int) -> None:
    assert parse_ttl(values) == ttl


@pytest.mark.parametrize(
    "values",
    [[], ["0"], ["21601"], ["-1"], ["+5"], ["1_0"], ["1.5"], ["abc"], [""], ["\u00b2"],
     ["60", "60"], ["9" * 40]],
)
def test_ttl_refused(values: list[str]) -> None:
    with pytest.raises(BadTtl):
        parse_ttl(values)


def test_token_shape_and_binding() -> None:
    t = token()
    expiry, nonce, mac = t.split(".")
    assert int(expiry) == int(NOW) + 60
    assert len(t) <= MAX_TOKEN_LENGTH and t.isascii()
    assert check_token(KEYS, A, t, NOW) is TokenCheck.VALID
    assert check_token(KEYS, A, t, NOW + 59.9) is TokenCheck.VALID
    # Bound to the instance and the expiry.
    assert check_token(KEYS, B, t, NOW) is TokenCheck.INVALID
    forged = f"{int(expiry) + 3600}.{nonce}.{mac}"
    assert check_token(KEYS, A, forged, NOW) is TokenCheck.INVALID
    # A different nonce gives a different token for the same instance and second.
    assert issue_token(KEYS, A, NOW, 60, b"\x02" * 9) != t


@pytest.mark.parametrize(("offset", "expected"), [(59, TokenCheck.VALID), (60, TokenCheck.EXPIRED),
                                                  (10_000, TokenCheck.EXPIRED)])
def test_expiry(offset: float, expected: TokenCheck) -> None:
    assert check_token(KEYS, A, token(), NOW + offset) is expected


def test_rotation_accepts_previous_key_and_issues_with_current() -> None:
    old = TokenKeys.from_secrets("old-secret")
    rotated = TokenKeys.from_secrets("current-secret", ["old-secret"])
    old_token = token(old)
    assert check_token(rotated, A, old_token, NOW) is TokenCheck.VALID
    # Tokens issued after the rotation verify without the old key.
    assert check_token(KEYS, A, token(rotated), NOW) is TokenCheck.VALID
    # Once the old key is dropped, its tokens stop working.
    assert check_token(KEYS, A, old_token, NOW) is TokenCheck.INVALID


def test_key_is_derived_not_the_secret() -> None:
    assert KEYS.current != b"current-secret" and len(KEYS.current) == 32


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        "1.2",
        "1.2.3.4",
        "abc.def.ghi",
        "1800000060.AQEBAQEBAQEBAQEB.",  # empty MAC
        "1800000060.AQEBAQEBAQEBAQEB.%%%%",  # not base64
        "1800000060.AQEBAQEBAQEBAQEB.AAAA",  # MAC of the wrong length
        "1" * (MAX_TOKEN_LENGTH + 1),
        "\u00e9" * 10,
    ],
)
def test_malformed_tokens_are_invalid(value: str) -> None:
    assert check_token(KEYS, A, value, NOW) is TokenCheck.INVALID


def test_overlong_token_is_refused_before_any_crypto(monkeypatch: pytest.MonkeyPatch) -> None:
    import openimds.metadata.tokens as tokens

    long_token = token() + "A" * MAX_TOKEN_LENGTH

    def boom(*args: object) -> bytes:
        raise AssertionError("HMAC computed for an over-long token")

    monkeypatch.setattr(tokens, "_mac", boom)
    assert check_token(KEYS, A, long_token, NOW) is TokenCheck.INVALID


def test_verifier_remembers_valid_tokens_but_still_checks_instance_and_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import openimds.metadata.tokens as tokens

    verifier = TokenVerifier(KEYS, size=2)
    t = token()
    assert verifier.check(A, t, NOW) is TokenCheck.VALID
    calls = []
    real = tokens._mac
    monkeypatch.setattr(tokens, "_mac", lambda *a: calls.append(a) or real(*a))
    assert verifier.check(A, t, NOW + 1) is TokenCheck.VALID
    assert calls == []  # answered from memory
    assert verifier.check(B, t, NOW) is TokenCheck.INVALID
    assert verifier.check(A, t, NOW + 60) is TokenCheck.EXPIRED
    assert verifier.check(A, "garbage", NOW) is TokenCheck.INVALID
    # Bounded: the oldest goes first.
    t2, t3 = (issue_token(KEYS, A, NOW, 60, bytes([i]) * 9) for i in (2, 3))
    for x in (t, t2, t3):
        assert verifier.check(A, x, NOW) is TokenCheck.VALID
    assert len(verifier._seen) == 2 and t not in verifier._seen
