"""Identification: every error of the spec's table, through the responder, plus HMAC vectors."""

from __future__ import annotations

import logging

import pytest

from openimds.metadata.identify import (
    ByAddress,
    Headers,
    IdentifySettings,
    SignatureCache,
    identify,
    parse_trusted_proxies,
    sign_instance_id,
    verify_signature,
)
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.source import DictSource
from openimds.metadata.view import FixedIPView, PortView, SubnetView
from tests.metadata.fixtures import SECRET, UUID_A, full_view, minimal_view
from tests.metadata.helpers import call, signed_headers

# The spec's table (section 11.3), computed there with Python's hmac module.
VECTORS = [
    ("secret123", UUID_A, "30c5388a1ffd18c89a3b607ce475bbaf98a000a097b41b86c00e7b7f1da80e76"),
    ("", UUID_A, "988ce0432879b2da725247b4a4c1a9ea78966115a19bcd11de5389b1e37c0fed"),
    ("", "a-b-c-d", "d98d0dd53b026a24df2c06b464ffa5dadb922ae41af7bd3ecc3cae75aef65771"),
    ("secret123", "a-b-c-d", "7b5299e7ab054231abe0a6eb8a12f0e9c3815e8a7e9631e816fc4e88b6a3303a"),
    (
        "secret123",
        "00000000-0000-0000-0000-000000000000",
        "e226461ac30ef119b26878d59922ad05a3106f5a532a66b5a8ffef960bd9591f",
    ),
    ("testing1234", "edge-x", "5d37735f52821318eb7c6413329c6b25932b030930bda5e83593563ab833c23d"),
    ("testing3468", "edge-x", "8d6d3aefae1dcc33c87191042b6125daaff6a4280496cb75400552261c578d5b"),
    ("secret123", "edge-x", "f10589596e948ffd1b4948b7b5dad5a3d073d7faa2e9a6ee760e4ea340d34a7b"),
]


@pytest.mark.parametrize(("secret", "value", "expected"), VECTORS)
def test_signature_vectors(secret: str, value: str, expected: str) -> None:
    assert sign_instance_id(secret, value) == expected
    assert verify_signature(secret, value, expected)
    assert not verify_signature(secret, value, expected.upper())


def proxy_responder(secret: str = SECRET) -> Responder:
    other = minimal_view(uuid="00000000-0000-0000-0000-000000000000", project_id="other")
    settings = RespondSettings(identify=IdentifySettings(True, secret))
    return Responder(DictSource([full_view(), other]), settings)


def hdrs(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return list(pairs)


GOOD_SIG = sign_instance_id(SECRET, UUID_A)
PROXY_ERRORS = [
    # (headers, path, status, explanation substring)
    ([], "/latest/meta-data/", 400, "X-Instance-ID header is missing from request."),
    ([], "/ec2", 400, "X-Instance-ID header is missing"),
    ([], "/openstack", 400, "X-Instance-ID header is missing"),
    (
        hdrs(("X-Instance-ID", UUID_A), ("X-Tenant-ID", "test")),
        "/openstack",
        400,
        "X-Instance-ID-Signature header is missing from request.",
    ),
    (
        hdrs(("X-Instance-ID", UUID_A), ("X-Instance-ID-Signature", GOOD_SIG)),
        "/openstack",
        400,
        "X-Tenant-ID header is missing from request.",
    ),
    (
        hdrs(("X-Tenant-ID", "test"), ("X-Instance-ID-Signature", GOOD_SIG)),
        "/openstack",
        400,
        "X-Instance-ID header is missing",
    ),
    (
        signed_headers(UUID_A, "test", SECRET) + [("X-Instance-ID", UUID_A)],
        "/openstack",
        400,
        "Multiple X-Instance-ID headers found within request.",
    ),
    (
        signed_headers(UUID_A, "test", SECRET) + [("x-tenant-id", "test")],
        "/openstack",
        400,
        "Multiple X-Tenant-ID headers found within request.",
    ),
    (
        signed_headers(UUID_A, "test", SECRET) + [("X-Instance-ID-Signature", GOOD_SIG)],
        "/openstack",
        400,
        "Multiple X-Instance-ID-Signature headers",
    ),
    (
        signed_headers(UUID_A, "test", "wrong"),
        "/openstack",
        403,
        "Invalid proxy request signature.",
    ),
    (
        hdrs(
            ("X-Instance-ID", UUID_A),
            ("X-Tenant-ID", "test"),
            ("X-Instance-ID-Signature", GOOD_SIG.upper()),
        ),
        "/openstack",
        403,
        "Invalid proxy request signature.",
    ),
    (
        hdrs(("X-Instance-ID", UUID_A), ("X-Tenant-ID", "test"), ("X-Instance-ID-Signature", "")),
        "/openstack",
        403,
        "Invalid proxy request signature.",
    ),
    # A bad signature wins over a path that does not exist.
    (signed_headers(UUID_A, "test", "wrong"), "/no/such/path", 403, "Invalid proxy"),
    (
        signed_headers("11111111-2222-3333-4444-555555555555", "test", SECRET),
        "/openstack",
        404,
        "The resource could not be found.",
    ),
    (signed_headers(UUID_A, "other", SECRET), "/openstack", 404, "could not be found"),
    (
        signed_headers("00000000-0000-0000-0000-000000000000", "test", SECRET),
        "/openstack",
        404,
        "could not be found",
    ),
    # The signed instance exists but the path does not.
    (signed_headers(UUID_A, "test", SECRET), "/openstack/2011-01-01", 404, "could not be found"),
    # An empty X-Metadata-Provider is not provider mode.
    ([("X-Metadata-Provider", "")], "/openstack", 400, "X-Instance-ID header is missing"),
]


@pytest.mark.parametrize(("headers", "path", "status", "text"), PROXY_ERRORS)
async def test_proxy_mode_errors(
    headers: list[tuple[str, str]], path: str, status: int, text: str
) -> None:
    resp = await call(proxy_responder(), path, headers=headers)
    assert resp.status == status
    assert resp.content_type == "text/plain; charset=UTF-8"
    assert text.encode() in resp.body


async def test_root_needs_no_identification_in_any_mode() -> None:
    for proxy in (True, False):
        settings = RespondSettings(identify=IdentifySettings(proxy, SECRET))
        for path in ("/", "/foo/../", "/."):
            resp = await call(Responder(DictSource(), settings), path, peer="203.0.113.1")
            assert resp.status == 200, (proxy, path)


async def test_empty_secret_still_requires_the_empty_key_hmac() -> None:
    responder = proxy_responder(secret="")
    ok = await call(responder, "/openstack", headers=signed_headers(UUID_A, "test", ""))
    assert ok.status == 200
    bad = await call(responder, "/openstack", headers=signed_headers(UUID_A, "test", "x"))
    assert bad.status == 403


# Provider mode ---------------------------------------------------------------------------


def provider_responder(secret: str) -> Responder:
    view = full_view()
    settings = RespondSettings(identify=IdentifySettings(True, secret))
    return Responder(DictSource([view], providers={"edge-x": [view.ports[0].network_id]}), settings)


PROVIDER_SIG = "5d37735f52821318eb7c6413329c6b25932b030930bda5e83593563ab833c23d"


@pytest.mark.parametrize(
    ("secret", "headers", "status", "text"),
    [
        ("testing1234", [("X-Metadata-Provider", "edge-x")], 400, "X-Forwarded-For is missing"),
        (
            "testing1234",
            [("X-Metadata-Provider", "edge-x"), ("X-Forwarded-For", "10.0.0.5")],
            403,
            "Invalid proxy request signature.",
        ),
        (
            "testing3468",
            [
                ("X-Metadata-Provider", "edge-x"),
                ("X-Metadata-Provider-Signature", PROVIDER_SIG),
                ("X-Forwarded-For", "10.0.0.5"),
            ],
            403,
            "Invalid proxy request signature.",
        ),
        (
            "testing1234",
            [
                ("X-Metadata-Provider", "edge-x"),
                ("X-Metadata-Provider-Signature", PROVIDER_SIG),
                ("X-Forwarded-For", "10.0.0.5, 172.16.0.1"),
            ],
            200,
            "b65cee2f",
        ),
        (
            "",
            [("X-Metadata-Provider", "edge-x"), ("X-Forwarded-For", "10.0.0.5")],
            200,
            "b65cee2f",
        ),
        (
            "",
            [("X-Metadata-Provider", "edge-y"), ("X-Forwarded-For", "10.0.0.5")],
            400,
            "Could not find any subnets for provider edge-y",
        ),
        (
            "",
            [("X-Metadata-Provider", "edge-x"), ("X-Forwarded-For", "10.0.0.77")],
            400,
            "Expected a single port matching provider edge-x and IP 10.0.0.77. Found 0.",
        ),
        (
            "",
            [
                ("X-Metadata-Provider", "edge-x"),
                ("X-Metadata-Provider", "edge-x"),
                ("X-Forwarded-For", "10.0.0.5"),
            ],
            400,
            "Multiple X-Metadata-Provider headers",
        ),
    ],
)
async def test_provider_mode(
    secret: str, headers: list[tuple[str, str]], status: int, text: str
) -> None:
    resp = await call(
        provider_responder(secret), "/openstack/latest/meta_data.json", headers=headers
    )
    assert resp.status == status, resp.body
    assert text.encode() in resp.body


# Direct mode -----------------------------------------------------------------------------


def direct_responder(trusted: tuple[str, ...] = (), extra: tuple = ()) -> Responder:
    settings = RespondSettings(
        identify=IdentifySettings(False, SECRET, parse_trusted_proxies(trusted))
    )
    return Responder(DictSource([full_view(), *extra]), settings)


async def test_direct_mode_by_peer() -> None:
    resp = await call(direct_responder(), "/latest/meta-data/instance-id", peer="10.0.0.5")
    assert (resp.status, resp.body) == (200, b"i-00000001")


async def test_direct_mode_ignores_identity_headers_and_untrusted_forwarded_for() -> None:
    responder = direct_responder()
    h = signed_headers(UUID_A, "test", SECRET) + [("X-Forwarded-For", "10.0.0.5")]
    resp = await call(responder, "/latest/meta-data/instance-id", headers=h, peer="203.0.113.9")
    assert resp.status == 404
    assert (await call(responder, "/ec2", peer="203.0.113.9")).status == 404
    assert (await call(responder, "/openstack", peer="203.0.113.9")).status == 404


@pytest.mark.parametrize(
    ("forwarded", "status"),
    [
        ("10.0.0.5", 200),
        ("10.0.0.5, 127.0.0.1", 200),  # our own trusted hop is skipped
        ("10.0.0.5, 198.51.100.7", 404),  # the nearest untrusted hop is the caller
        (None, 404),  # the proxy itself is no instance
    ],
)
async def test_direct_mode_trusted_proxy(forwarded: str | None, status: int) -> None:
    responder = direct_responder(trusted=("127.0.0.0/8",))
    headers = [("X-Forwarded-For", forwarded)] if forwarded else []
    resp = await call(responder, "/latest/meta-data/instance-id", headers=headers, peer="127.0.0.1")
    assert resp.status == status


async def test_direct_mode_ambiguous_address_is_404_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = SubnetView(id="s2", cidr="10.0.0.0/24", ip_version=4)
    twin = minimal_view(
        ports=(
            PortView("p-twin", "fa:16:3e:00:00:01", "net-2", 1500, (FixedIPView("10.0.0.5", sub),)),
        )
    )
    caplog.set_level(logging.WARNING)
    resp = await call(
        direct_responder(extra=(twin,)), "/latest/meta-data/instance-id", peer="10.0.0.5"
    )
    assert resp.status == 404
    assert "ambiguous" in caplog.text and "net-2" in caplog.text


async def test_direct_mode_unknown_caller_address_is_500() -> None:
    resp = await call(direct_responder(), "/latest/meta-data/instance-id", peer=None)
    assert resp.status == 500
    assert b"An unknown error has occurred" in resp.body


def test_identify_pure_direct_mode() -> None:
    settings = IdentifySettings(False, "", parse_trusted_proxies(["10.255.0.1"]))
    got = identify(Headers([("x-forwarded-for", "10.0.0.5")]), "10.255.0.1", settings)
    assert got == ByAddress("10.0.0.5")


def test_trusted_proxies_are_validated() -> None:
    with pytest.raises(ValueError):
        parse_trusted_proxies(["10.0.0.300"])


# ---- SignatureCache: the per-process memo of expected HMACs ------------------------------------


@pytest.mark.parametrize(("secret", "value", "expected"), VECTORS)
def test_signature_cache_agrees_with_verify_signature(
    secret: str, value: str, expected: str
) -> None:
    cache = SignatureCache(secret)
    for _ in range(2):  # first computed, then remembered: same answers
        assert cache.verify(value, expected)
        assert not cache.verify(value, expected.upper())
        assert not cache.verify(value, expected[:-1])
        assert not cache.verify(value, "")
        assert not cache.verify(value, "é" * 64)  # non-ASCII: refused, not an exception


def test_signature_cache_remembers_only_verified_values_and_is_bounded() -> None:
    cache = SignatureCache(SECRET, size=2)
    for i in range(5):
        assert not cache.verify(f"made-up-{i}", "0" * 64)
    assert len(cache._expected) == 0  # bad signatures cannot push real entries out
    ids = ["a", "b", "c"]
    for value in ids:
        assert cache.verify(value, sign_instance_id(SECRET, value))
    assert list(cache._expected) == ["b", "c"]  # oldest dropped
    assert cache.verify("a", sign_instance_id(SECRET, "a"))  # recomputed, still right


async def test_responder_signature_cache_still_refuses_forgeries() -> None:
    responder = proxy_responder()
    good = signed_headers(UUID_A, "test", SECRET)
    assert (await call(responder, "/openstack", headers=good)).status == 200
    # Same instance id, now cached: a wrong signature is still a 403.
    forged = [(k, v if k != "X-Instance-ID-Signature" else "0" * 64) for k, v in good]
    resp = await call(responder, "/openstack", headers=forged)
    assert resp.status == 403 and resp.outcome == "bad-signature"
    assert (await call(responder, "/openstack", headers=good)).status == 200
