"""The session-token gate through the responder: AWS IMDSv2 status rules on both trees."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.metadata.gate import HOP_LIMIT_HEADER, TOKEN_HEADER, TTL_HEADER
from openimds.metadata.identify import IdentifySettings, parse_trusted_proxies
from openimds.metadata.options import MetadataOptions
from openimds.metadata.respond import MetadataResponse, Responder, RespondSettings
from openimds.metadata.source import DictSource
from openimds.metadata.tokens import TokenKeys
from openimds.metadata.view import InstanceView
from tests.metadata.fixtures import PORT_VIEW_A, SECRET, UUID_A, UUID_MIN, full_view, minimal_view
from tests.metadata.helpers import call, signed_headers

NOW = 1_800_000_000.0
KEYS = TokenKeys.from_secrets("token-secret")


def settings(**kw: Any) -> RespondSettings:
    return RespondSettings(identify=IdentifySettings(True, SECRET), tokens=KEYS, **kw)


def responder(
    options: dict[str, Any] | None = None, **kw: Any
) -> Responder:
    a = full_view(metadata_options=options or {})
    b = minimal_view()
    return Responder(DictSource([a, b]), settings(**kw))


def who(view_uuid: str = UUID_A, project: str = "test") -> list[tuple[str, str]]:
    return signed_headers(view_uuid, project, SECRET)


async def put_token(
    r: Responder, ttl: str | None = "21600", extra: list[tuple[str, str]] | None = None,
    uuid: str = UUID_A, project: str = "test", now: float = NOW,
) -> MetadataResponse:
    headers = who(uuid, project) + ([(TTL_HEADER, ttl)] if ttl is not None else []) + (extra or [])
    return await call(r, "/latest/api/token", method="PUT", headers=headers, now=now)


async def get(
    r: Responder, path: str, token: str | None = None, now: float = NOW,
    uuid: str = UUID_A, project: str = "test",
) -> MetadataResponse:
    headers = who(uuid, project) + ([(TOKEN_HEADER, token)] if token is not None else [])
    return await call(r, path, headers=headers, now=now)


async def test_token_put_returns_token_and_echoes_ttl() -> None:
    resp = await put_token(responder(), "300")
    assert resp.status == 200 and resp.content_type == "text/plain; charset=UTF-8"
    assert dict(resp.headers) == {TTL_HEADER: "300", HOP_LIMIT_HEADER: "1"}
    assert resp.outcome == "token-issued"
    token = resp.body.decode()
    ok = await get(responder(), "/latest/meta-data/instance-id", token)
    assert (ok.status, ok.body, ok.token) == (200, b"i-00000001", "valid")


async def test_ttl_header_is_matched_case_insensitively() -> None:
    r = responder()
    resp = await call(
        r, "/latest/api/token", method="PUT",
        headers=who() + [("x-aws-ec2-metadata-token-ttl-seconds", "10")], now=NOW,
    )
    assert resp.status == 200


@pytest.mark.parametrize("ttl", [None, "0", "21601", "abc", ""])
async def test_token_put_bad_ttl_is_400(ttl: str | None) -> None:
    resp = await put_token(responder(), ttl)
    assert resp.status == 400 and b"X-aws-ec2-metadata-token-ttl-seconds" in resp.body


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD"])
async def test_token_path_other_methods_are_405(method: str) -> None:
    resp = await call(responder(), "/latest/api/token", method=method, headers=who(), now=NOW)
    assert resp.status == 405


async def test_token_put_through_a_guest_proxy_is_403() -> None:
    # Behind our proxy: haproxy reports the guest's own X-Forwarded-For in an internal header.
    resp = await put_token(responder(), extra=[("X-OpenIMDS-Guest-Forwarded", "1")])
    assert resp.status == 403 and resp.outcome == "token-forwarded"


@pytest.mark.parametrize(
    ("peer", "forwarded", "status"),
    [
        ("10.0.0.5", None, 200),  # the guest itself
        ("10.0.0.5", "10.9.9.9", 403),  # the guest relayed someone's request
        ("192.0.2.1", "10.0.0.5", 200),  # our trusted proxy added the one hop
        ("192.0.2.1", "10.9.9.9, 10.0.0.5", 403),  # the guest's own header plus ours
    ],
)
async def test_token_put_forwarded_rule_in_direct_mode(
    peer: str, forwarded: str | None, status: int
) -> None:
    ident = IdentifySettings(False, "", parse_trusted_proxies(["192.0.2.1"]))
    r = Responder(
        DictSource([full_view(ports=(PORT_VIEW_A,))]),
        RespondSettings(identify=ident, tokens=KEYS),
    )
    headers = [(TTL_HEADER, "60")] + ([("X-Forwarded-For", forwarded)] if forwarded else [])
    resp = await call(r, "/latest/api/token", method="PUT", headers=headers, peer=peer, now=NOW)
    assert resp.status == status, resp.body


@pytest.mark.parametrize(
    "path", ["/latest/meta-data/instance-id", "/openstack/latest/meta_data.json", "/2009-04-04/"]
)
async def test_optional_mode_serves_tokenless_and_counts_it(path: str) -> None:
    resp = await get(responder(), path)
    assert resp.status == 200 and resp.token == "none"


@pytest.mark.parametrize(
    "path", ["/latest/meta-data/instance-id", "/openstack/latest/meta_data.json", "/openstack"]
)
async def test_required_mode_refuses_tokenless_on_both_trees(path: str) -> None:
    r = responder({"http_tokens": "required"})
    resp = await get(r, path)
    assert resp.status == 401 and resp.token == "none" and resp.outcome == "token-required"
    token = (await put_token(r)).body.decode()
    assert (await get(r, path, token)).status == 200


async def test_cloud_wide_default_required() -> None:
    r = responder(metadata_defaults=MetadataOptions(http_tokens="required"))
    assert (await get(r, "/latest/meta-data/")).status == 401
    # An instance's own setting wins over the default.
    r = responder({"http_tokens": "optional"}, metadata_defaults=MetadataOptions(http_tokens="required"))
    assert (await get(r, "/latest/meta-data/")).status == 200


@pytest.mark.parametrize("mode", ["optional", "required"])
async def test_bad_tokens_are_401_in_both_modes(mode: str) -> None:
    r = responder({"http_tokens": mode})
    token = (await put_token(r, "60")).body.decode()
    expired = await get(r, "/latest/meta-data/", token, now=NOW + 60)
    assert expired.status == 401 and expired.token == "invalid"
    assert (await get(r, "/latest/meta-data/", "garbage")).status == 401
    assert (await get(r, "/latest/meta-data/", "x" * 10_000)).status == 401
    # A token issued with another key (another cloud, or a key dropped after rotation).
    other = Responder(
        DictSource([full_view()]), RespondSettings(identify=IdentifySettings(True, SECRET))
    )
    foreign = (await put_token(other)).body.decode()
    assert (await get(r, "/latest/meta-data/", foreign)).status == 401


async def test_token_of_another_instance_is_401() -> None:
    r = responder()
    token_min = (await put_token(r, uuid=UUID_MIN, project="other")).body.decode()
    resp = await get(r, "/latest/meta-data/", token_min)
    assert resp.status == 401 and resp.outcome == "invalid-token"


async def test_two_token_headers_are_401() -> None:
    r = responder()
    token = (await put_token(r)).body.decode()
    headers = who() + [(TOKEN_HEADER, token), (TOKEN_HEADER, token)]
    assert (await call(r, "/latest/meta-data/", headers=headers, now=NOW)).status == 401


async def test_a_token_survives_a_restart_and_other_replicas() -> None:
    token = (await put_token(responder())).body.decode()
    # A new responder with the same configured secret (another replica, or after a restart).
    assert (await get(responder(), "/latest/meta-data/instance-id", token)).status == 200


async def test_rotation_keeps_old_tokens_valid() -> None:
    token = (await put_token(responder())).body.decode()
    rotated = TokenKeys.from_secrets("new-secret", ["token-secret"])
    r = Responder(
        DictSource([full_view()]),
        RespondSettings(identify=IdentifySettings(True, SECRET), tokens=rotated),
    )
    assert (await get(r, "/latest/meta-data/instance-id", token)).status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/latest/meta-data/"), ("PUT", "/latest/api/token"),
     ("GET", "/openstack/latest/meta_data.json"), ("POST", "/openstack/latest/password")],
)
async def test_endpoint_disabled_is_403_for_everything(method: str, path: str) -> None:
    r = responder({"http_endpoint": "disabled"})
    resp = await call(r, path, method=method, headers=who() + [(TTL_HEADER, "60")], now=NOW)
    assert resp.status == 403 and resp.outcome == "endpoint-disabled"


async def test_hop_limit_of_the_instance_is_in_the_token_answer() -> None:
    resp = await put_token(responder({"http_put_response_hop_limit": 2}))
    assert dict(resp.headers)[HOP_LIMIT_HEADER] == "2"


async def test_nova_profile_has_no_token_api() -> None:
    r = responder(ec2_profile="nova")
    assert (await put_token(r)).status == 404


async def test_unidentified_caller_gets_no_token() -> None:
    r = responder()
    headers = signed_headers("00000000-0000-4000-8000-000000000000", "x", SECRET)
    resp = await call(r, "/latest/api/token", method="PUT", headers=headers + [(TTL_HEADER, "5")])
    assert resp.status == 404


def _view_with(options: dict[str, Any]) -> InstanceView:
    return full_view(metadata_options=options)


def test_view_options_are_read_only() -> None:
    view = _view_with({"http_tokens": "required"})
    with pytest.raises(TypeError):
        view.metadata_options["http_tokens"] = "optional"  # type: ignore[index]


@pytest.mark.parametrize(
    ("address", "status"),
    [("fe80::f816:3eff:fe9c:bf3d", 403), ("2001:db8::5", 403), ("10.0.0.5", 200),
     ("::ffff:10.0.0.5", 200)],
)
async def test_ipv6_disabled_refuses_requests_over_ipv6(address: str, status: int) -> None:
    r = responder({"http_protocol_ipv6": "disabled"})
    headers = who() + [("X-Forwarded-For", address)]
    resp = await call(r, "/latest/meta-data/instance-id", headers=headers, now=NOW)
    assert resp.status == status
    # Enabled (the default): both families are served.
    assert (await call(responder(), "/latest/meta-data/instance-id", headers=headers,
                       now=NOW)).status == 200
