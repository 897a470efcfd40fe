"""Request → response, without sockets: the whole metadata API behaviour in one place.

`Responder.respond(MetadataRequest) -> MetadataResponse` follows nova's order (spec section 2):
the bare `/` first, then identification, then the instance lookup and tenant check, then the
path. Every failure is a `MetadataError` turned into a response here, at one edge, so no
traceback can reach a guest. The aiohttp handler in `server.py` only converts types.

Per-request values come in with the request (`today`, `random_bytes`) so this module has no
clock and no entropy source of its own.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple, Protocol

from openimds.metadata import errors as e
from openimds.metadata import gate
from openimds.metadata.aws import AwsProfile
from openimds.metadata.identify import (
    ByAddress,
    ByInstanceId,
    ByProvider,
    Headers,
    IdentifySettings,
    SignatureCache,
    identify,
    is_trusted,
)
from openimds.metadata.options import MetadataOptions, effective_options
from openimds.metadata.source import InstanceSource, PasswordResult
from openimds.metadata.tokens import TokenKeys, TokenVerifier
from openimds.metadata.tree import (
    HTML,
    JSON,
    TEXT,
    Dir,
    PasswordLeaf,
    RequestAddressLeaf,
    SeededJsonLeaf,
    TextLeaf,
    Tree,
    VendorData2Leaf,
    VendordataOptions,
    ec2_version_listing,
    lookup,
    render_tree,
)
from openimds.metadata.vendordata import merge_vendordata2
from openimds.metadata.view import InstanceView
from openimds.wire import DYNAMIC_JSON

__all__ = [
    "PASSWORD_MAX_BYTES",
    "RANDOM_SEED_BYTES",
    "MetadataRequest",
    "MetadataResponse",
    "RespondSettings",
    "Responder",
    "Reuse",
    "VendordataFetcher",
    "normalise_path",
]

LOG = logging.getLogger(__name__)

# Four of nova's 255-character system-metadata chunks.
PASSWORD_MAX_BYTES = 1020
RANDOM_SEED_BYTES = 512


# Request and response are NamedTuples, not frozen dataclasses: equally immutable, and built
# several times per request on the hot path, where a frozen dataclass's __init__ costs ~1 µs
# (object.__setattr__ per field) against ~0.2 µs for a tuple.
class MetadataRequest(NamedTuple):
    method: str
    # Percent-decoded path without the query string (the query is ignored, as in nova).
    path: str
    headers: tuple[tuple[str, str], ...]
    peer: str | None
    today: date
    random_bytes: Callable[[int], bytes]
    # Read by the edge for POST only, at most PASSWORD_MAX_BYTES + 1 bytes.
    body: bytes | None = None
    # Unix time of the request (session token expiry).
    now: float = 0.0
    # Asked by the server itself to render an answer ahead of the guest (fastserver.py):
    # what needs another service's answer of the moment is then not rendered (nor asked).
    ahead: bool = False


class Reuse(NamedTuple):
    """Set on an answer that any request with the same method, path and signed identity
    headers, without a session token, would get again (whatever its X-Forwarded-For) for as long
    as the source hands out the same `view` object and the date is `today`: the fast server
    keeps such answers as bytes (`answers.py`). `seeded` is meta_data.json's leaf, whose
    `random_seed` must still be fresh on every response."""

    view: InstanceView
    today: date
    seeded: SeededJsonLeaf | None = None


class MetadataResponse(NamedTuple):
    status: int
    content_type: str
    body: bytes
    # For the access log and metrics: who asked (instance uuid) and what happened.
    instance_id: str | None = None
    outcome: str = "ok"
    family: str = "other"
    # Seconds for a Retry-After header (503 while the inventory is unreachable).
    retry_after: int | None = None
    # Extra response headers (the token TTL echo, the proxy's hop-limit header).
    headers: tuple[tuple[str, str], ...] = ()
    # gate.TokenState of the request ("" when the gate did not run), for counters.
    token: str = ""
    # Whether and how this very answer may be given again without asking (see `Reuse`).
    reuse: Reuse | None = None


@dataclass(frozen=True)
class RespondSettings:
    identify: IdentifySettings = field(default_factory=IdentifySettings)
    dhcp_domain: str | None = "novalocal"
    vendordata: VendordataOptions = field(default_factory=VendordataOptions)
    # Rendered trees kept per process; views themselves are the source's business.
    tree_cache_size: int = 20000
    # Session token keys; the default (a random key per process) suits tests and demos only.
    tokens: TokenKeys = field(default_factory=lambda: TokenKeys(os.urandom(32)))
    # Cloud-wide metadata options, under each instance's own settings.
    metadata_defaults: MetadataOptions = field(default_factory=MetadataOptions)
    # "aws": the AWS keys and the token API; "nova": Nova's EC2 tree byte for byte and no
    # token API (PUT /latest/api/token is a 404 there, as in Nova).
    ec2_profile: str = "aws"
    # The AWS profile's cloud-wide values (region, identity signer).
    aws: AwsProfile = field(default_factory=AwsProfile)


class VendordataFetcher(Protocol):
    async def fetch(self, view: InstanceView) -> list[tuple[str, Any]]: ...


def normalise_path(path: str) -> str:
    """POSIX normpath as nova applies it (two leading slashes survive, on purpose)."""
    if not path.startswith("/"):
        path = "/" + path
    return posixpath.normpath(path)


def _family(tokens: list[str]) -> str:
    if not tokens or tokens == [""]:
        return "root"
    if tokens[0] == "openstack":
        return "openstack"
    return "ec2"


def _outcome(err: e.MetadataError) -> str:
    # kebab-case of the error class: a closed, low-cardinality set for logs and metrics.
    name = type(err).__name__
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _guest_forwarded(headers: Headers, peer: str | None, settings: IdentifySettings) -> bool:
    """Whether the guest's own request carried X-Forwarded-For (it went through a proxy of
    the guest's, the SSRF pattern a token PUT must not pass)."""
    if headers.get_all(gate.GUEST_FORWARDED_HEADER):
        return True
    if settings.service_metadata_proxy:
        # Behind our proxy X-Forwarded-For is the proxy's; the guest's copy was deleted and
        # reported in GUEST_FORWARDED_HEADER.
        return False
    hops = [h for v in headers.get_all("X-Forwarded-For") for h in v.split(",") if h.strip()]
    if not hops:
        return False
    # Direct mode: a trusted proxy adds exactly one hop; anything else came from the guest.
    return not (peer and is_trusted(peer, settings.trusted_proxies)) or len(hops) > 1


class Responder:
    """Built once per process by the wiring; holds the source, options and the tree cache."""

    def __init__(
        self,
        source: InstanceSource,
        settings: RespondSettings | None = None,
        *,
        vendordata: VendordataFetcher | None = None,
        on_tree_cache: Callable[[bool], None] | None = None,
    ) -> None:
        self.source = source
        self.settings = settings or RespondSettings()
        self.vendordata = vendordata
        self._trees: OrderedDict[str, tuple[InstanceView, date, Tree]] = OrderedDict()
        self._on_tree_cache = on_tree_cache
        # Settings are frozen, so the secret cannot change under the cache.
        self._signatures = SignatureCache(self.settings.identify.shared_secret)
        self._root_listing = ec2_version_listing(self.settings.ec2_profile == "aws")
        self._tokens = TokenVerifier(self.settings.tokens)

    def count_reuse(self) -> None:
        """One of this responder's answers was given again from bytes (`answers.py`): its
        rendered tree served the request, so it counts as a tree cache hit."""
        if self._on_tree_cache:
            self._on_tree_cache(True)

    def prepare(self, view: InstanceView, today: date) -> None:
        """Render `view`'s tree for `today` now, ahead of its first request (the tree cache
        keeps it while the source hands out this very view). Only into free room: a tree
        rendered ahead never evicts one in use."""
        cached = self._trees.get(view.uuid)
        if cached is None and len(self._trees) >= self.settings.tree_cache_size:
            return
        self._tree(view, today)

    def _tree(self, view: InstanceView, today: date) -> Tree:
        cached = self._trees.get(view.uuid)
        # Identity, not equality: the source hands out a new object exactly when data changed.
        if cached is not None and cached[0] is view and cached[1] == today:
            self._trees.move_to_end(view.uuid)
            if self._on_tree_cache:
                self._on_tree_cache(True)
            return cached[2]
        if self._on_tree_cache:
            self._on_tree_cache(False)
        settings = self.settings
        aws = settings.aws if settings.ec2_profile == "aws" else None
        tags = aws is not None and (
            effective_options(view.metadata_options, settings.metadata_defaults)
            .instance_metadata_tags == "enabled"
        )
        tree = render_tree(
            view,
            today=today,
            dhcp_domain=settings.dhcp_domain,
            vendordata=settings.vendordata,
            aws=aws,
            tags=tags,
        )
        self._trees[view.uuid] = (view, today, tree)
        self._trees.move_to_end(view.uuid)
        while len(self._trees) > self.settings.tree_cache_size:
            self._trees.popitem(last=False)
        return tree

    async def _instance(
        self, req: MetadataRequest, headers: Headers
    ) -> tuple[InstanceView, str | None, bool]:
        """Identify the caller and load its view; returns (view, request address, whether the
        caller was identified by its signed instance id alone)."""
        who = identify(headers, req.peer, self.settings.identify, self._signatures)
        if isinstance(who, ByInstanceId):
            view = await self.source.view_for_instance(who.instance_id)
            if view is None:
                raise e.InstanceNotFound(log_detail=f"no instance {who.instance_id!r}")
            if view.project_id != who.tenant_id:
                raise e.InstanceNotFound(
                    log_detail=f"instance {who.instance_id!r} is not in tenant {who.tenant_id!r}"
                )
            return view, who.request_address, True
        if isinstance(who, ByProvider):
            matches = await self.source.ports_for_provider(who.provider, who.address)
            if matches is None:
                raise e.ProviderLookupFailed(
                    f"Could not find any subnets for provider {who.provider}"
                )
            if len(matches) != 1:
                raise e.ProviderLookupFailed(
                    f"Expected a single port matching provider {who.provider} "
                    f"and IP {who.address}. Found {len(matches)}."
                )
            match = matches[0]
            view = await self.source.view_for_instance(match.device_id)
            if view is None or view.project_id != match.project_id:
                raise e.InstanceNotFound(log_detail=f"provider port {match.port_id}: no instance")
            return view, who.address, False
        assert isinstance(who, ByAddress)
        matches = await self.source.ports_for_address(who.address)
        if not matches:
            raise e.InstanceNotFound(log_detail=f"no port has address {who.address}")
        owners = {m.device_id for m in matches}
        if len(owners) > 1 or len(matches) > 1:
            # Overlapping tenant ranges: refusing beats serving one tenant another's secrets.
            raise e.InstanceNotFound(
                log_detail=f"address {who.address} is ambiguous: ports "
                + ", ".join(f"{m.port_id} on network {m.network_id}" for m in matches)
            )
        match = matches[0]
        view = await self.source.view_for_instance(match.device_id)
        if view is None:
            raise e.InstanceNotFound(
                log_detail=f"address {who.address}: device {match.device_id!r} is no instance"
            )
        if view.project_id != match.project_id:
            # Another project's port naming this instance: its address is not the instance's.
            raise e.InstanceNotFound(
                log_detail=f"address {who.address}: port {match.port_id} of project "
                f"{match.project_id} names instance {view.uuid} of another project"
            )
        return view, who.address, False

    async def _password(
        self, req: MetadataRequest, view: InstanceView, leaf: PasswordLeaf
    ) -> MetadataResponse:
        method = req.method.upper()
        if method == "GET":
            return MetadataResponse(200, HTML, (leaf.current or "").encode(), view.uuid,
                                    reuse=Reuse(view, req.today))
        if method != "POST":
            raise e.PasswordMethod()
        # The already-set check comes first, as in nova (a big POST over a set password is 409).
        if leaf.current:
            raise e.PasswordAlreadySet()
        body = req.body or b""
        if len(body) > PASSWORD_MAX_BYTES:
            raise e.PasswordTooLarge()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise e.PasswordInvalid() from exc
        result = await self.source.set_password(view.uuid, text)
        if result is PasswordResult.ALREADY_SET:
            raise e.PasswordAlreadySet()
        if result is PasswordResult.NOT_FOUND:
            raise e.PasswordInvalid(f"Instance {view.uuid} could not be found.")
        return MetadataResponse(200, HTML, b"", view.uuid, outcome="password-set")

    async def _serve(
        self, req: MetadataRequest, tokens: list[str]
    ) -> MetadataResponse:
        headers = Headers(req.headers)
        view, request_address, by_instance_id = await self._instance(req, headers)
        try:
            state = self._gate(req, tokens, headers, view, request_address)
            if isinstance(state, gate.IssuedToken):
                body = state.token.encode()
                return MetadataResponse(
                    200, TEXT, body, view.uuid, "token-issued", headers=state.headers()
                )
            resp = await self._leaf(req, tokens, view, request_address)
            if resp.reuse is not None and not (
                # Reused only where nothing but the view, date, method, path and signed
                # identity decided it: no token (its expiry is the request's), and an address
                # (X-Forwarded-For) that plays no part (the IPv6 option looks at it).
                by_instance_id
                and state == gate.TokenState.NONE
                and effective_options(
                    view.metadata_options, self.settings.metadata_defaults
                ).http_protocol_ipv6 == "enabled"
            ):
                resp = resp._replace(reuse=None)
            return resp._replace(token=state)
        except e.MetadataError as err:
            err.instance_id = view.uuid
            raise

    def _gate(
        self,
        req: MetadataRequest,
        tokens: list[str],
        headers: Headers,
        view: InstanceView,
        request_address: str | None,
    ) -> gate.IssuedToken | str:
        """The session-token rules (gate.py): a token to issue, or the request's TokenState."""
        settings = self.settings
        options = effective_options(view.metadata_options, settings.metadata_defaults)
        if options.http_endpoint == "disabled":
            raise e.EndpointDisabled()
        if (
            options.http_protocol_ipv6 == "disabled"
            and request_address is not None
            and gate.over_ipv6(request_address)
        ):
            raise e.Ipv6Disabled()
        values = headers._values
        if tokens == gate.TOKEN_PATH and settings.ec2_profile == "aws":
            return gate.issue(
                req.method,
                values,
                _guest_forwarded(headers, req.peer, settings.identify),
                options,
                settings.tokens,
                view.uuid,
                req.now,
                req.random_bytes,
            )
        return gate.check_request(values, options, self._tokens, view.uuid, req.now)

    async def _leaf(
        self,
        req: MetadataRequest,
        tokens: list[str],
        view: InstanceView,
        request_address: str | None,
    ) -> MetadataResponse:
        node = lookup(self._tree(view, req.today), tokens)
        if isinstance(node, PasswordLeaf):
            return await self._password(req, view, node)
        if isinstance(node, Dir):
            return MetadataResponse(200, TEXT, node.listing, view.uuid,
                                    reuse=Reuse(view, req.today))
        if isinstance(node, TextLeaf):
            return MetadataResponse(200, node.content_type, node.body, view.uuid,
                                    reuse=Reuse(view, req.today))
        if isinstance(node, SeededJsonLeaf):
            body = node.body(req.random_bytes(RANDOM_SEED_BYTES) if node.needs_seed else b"")
            return MetadataResponse(200, JSON, body, view.uuid,
                                    reuse=Reuse(view, req.today, node))
        if isinstance(node, RequestAddressLeaf):
            return MetadataResponse(200, TEXT, str(request_address).encode(), view.uuid)
        assert isinstance(node, VendorData2Leaf)
        dynamic: list[tuple[str, Any]] = []
        reuse: Reuse | None = Reuse(view, req.today)
        if DYNAMIC_JSON in node.providers and self.vendordata is not None:
            if req.ahead:
                # Never kept, so never rendered ahead: no call to that service for it.
                return MetadataResponse(204, TEXT, b"", view.uuid, outcome="not-ahead")
            # Another service's answer of the moment: asked again every time.
            dynamic = await self.vendordata.fetch(view)
            reuse = None
        doc = merge_vendordata2(node.providers, node.static, dynamic)
        return MetadataResponse(200, JSON, json.dumps(doc).encode(), view.uuid, reuse=reuse)

    async def respond(self, req: MetadataRequest) -> MetadataResponse:
        path = normalise_path(req.path)
        if path == "/":
            # Answered before identification, for anybody (nova does the same).
            return MetadataResponse(200, TEXT, self._root_listing, family="root")
        tokens = path.split("/")[1:]
        family = _family(tokens)
        try:
            resp = await self._serve(req, tokens)
        except e.MetadataError as err:
            return self._error(req, err, family)
        except Exception as exc:  # the guest must never see a traceback
            LOG.exception("%s %s: unexpected failure", req.method, req.path)
            return self._error(req, e.InternalError(log_detail=repr(exc)), family)
        return resp._replace(family=family)

    def _error(self, req: MetadataRequest, err: e.MetadataError, family: str) -> MetadataResponse:
        accept = Headers(req.headers).get("Accept")
        ctype, body = e.error_body(err.status, err.explanation, accept)
        detail = err.log_detail or err.explanation
        retry_after = None
        if isinstance(err, e.Unavailable):
            # An outage: the source logs when it starts and when it ends, not per request.
            retry_after = err.retry_after
        elif err.status >= 500:
            LOG.error("%s %s: %s", req.method, req.path, detail)
        elif err.log_detail:
            LOG.warning("%s %s: %s", req.method, req.path, detail)
        token = ""
        if isinstance(err, e.InvalidToken):
            token = gate.TokenState.INVALID
        elif isinstance(err, e.TokenRequired):
            token = gate.TokenState.NONE
        return MetadataResponse(
            err.status,
            ctype,
            body,
            err.instance_id,
            outcome=_outcome(err),
            family=family,
            retry_after=retry_after,
            token=token,
        )
