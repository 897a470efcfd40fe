"""The HTTP client of the control-plane API, for the CLI and the agents.

    async with ControlClient(auth_url, username, password, project_name) as api:
        nets = await api.list("networks")
        ports = await api.list("ports", network_id=net_id, fixed_ips="ip_address=10.0.0.5")
        page = await api.changes(since=0, timeout=30)

`auth_url` may end in `/v3` (Keystone v3 password auth) or `/v2.0` (the legacy route the seed's
metadata_agent.ini names); a bare `http://host:port` uses v3. It may list several control-api
replicas separated by commas: the client stays on one until it cannot be reached, then moves
to the next, authenticates there (the replica's catalog names its own endpoints) and sends the
request again only where that cannot write twice: any request whose connection was never made,
a GET/HEAD also after a reset or a timeout. A GET answered 503 (that replica lost its database)
is also asked of the next replica; every other answer is final. The token is cached and renewed
shortly before it expires, and once more on a 401. The network and compute endpoints come from
the token's service catalog (region `region` when given), so the identity and resource URLs may
differ. Errors arrive as `ApiError(status, type, message)` carrying the server's text;
connection failures as `ApiConnectionError`. `SyncControlClient` wraps the same calls for the
CLI.

The client owns its one aiohttp session (made at the first request, closed by `close()`); for an
https `auth_url` pass `ssl_context` (see `openimds.control.tls.client_ssl_context`). The agents
build their client in one place, `control_client_from_conf(conf)` (or `control_client(...)` from
plain values): it names every missing credential option (`MissingCredentials`) and applies
`auth_region`, `auth_insecure` and `auth_ca_cert`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from openimds.control.tls import client_ssl_context

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["RESOURCES", "ApiConnectionError", "ApiError", "ChangesPage", "ControlClient",
           "MissingCredentials", "SyncControlClient", "check_credentials",
           "control_client", "control_client_from_conf"]

# resource name -> (service, collection path, singular key)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "networks": ("network", "/v2.0/networks", "network"),
    "subnets": ("network", "/v2.0/subnets", "subnet"),
    "ports": ("network", "/v2.0/ports", "port"),
    "routers": ("network", "/v2.0/routers", "router"),
    "agents": ("network", "/v2.0/agents", "agent"),
    "servers": ("compute", "/servers", "server"),
    "keypairs": ("compute", "/os-keypairs", "keypair"),
}

# Neutron collections the client reads page by page, and the page size: big enough that a
# small cloud is one request, small enough that 100k ports never form one answer.
PAGED_RESOURCES = frozenset({"networks", "subnets", "ports", "routers", "agents"})
LIST_PAGE_SIZE = 1000


def _next_marker(links: Any) -> str | None:
    """The marker of the `next` link of a Neutron/Nova list answer, if there is one."""
    for link in links or ():
        if isinstance(link, dict) and link.get("rel") == "next":
            values = parse_qs(urlsplit(str(link.get("href", ""))).query).get("marker")
            if values:
                return values[-1]
    return None


# Renew this many seconds before expiry so a token never dies mid-request.
RENEW_MARGIN = 60.0


class ApiError(Exception):
    """An error answer from the API: HTTP status, the server's error type and message."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.type = type
        self.message = message


class ApiConnectionError(Exception):
    """The API could not be reached (refused, timed out, bad URL). `sent`: the request may
    have reached the server (a reset or timeout after connecting)."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


# Safe to send again after a lost answer.
_IDEMPOTENT = frozenset({"GET", "HEAD"})


class MissingCredentials(ValueError):
    """An agent's ini file lacks what it needs to reach the control plane."""


@dataclass(frozen=True)
class ChangesPage:
    changes: list[dict[str, Any]]
    revision: int  # pass as the next `since`
    current_revision: int  # the store's revision before this page was read


# The compute microversion this client reads (servers embed their flavor from 2.47 on).
COMPUTE_HEADERS = {"OpenStack-API-Version": "compute 2.47"}


def _error_from(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        return ApiError(status, "HTTPError", text.strip() or f"HTTP {status}")
    if isinstance(body, dict) and body:
        inner = body.get("NeutronError") or body.get("error") or next(iter(body.values()))
        if isinstance(inner, dict):
            kind = inner.get("type") or inner.get("title") or next(iter(body))
            return ApiError(status, str(kind), str(inner.get("message", text)))
    return ApiError(status, "HTTPError", text)


def _parse_time(text: str | None) -> float:
    if not text:
        return time.time() + 300
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _query(filters: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple | set) else [value]
        for item in values:
            out.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return out


class ControlClient:
    """Async client; see the module docstring. One aiohttp session (pooled connections)."""

    def __init__(self, auth_url: str, username: str, password: str, project_name: str, *,
                 region: str | None = None, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.auth_urls = [u.strip().rstrip("/") for u in auth_url.split(",") if u.strip()]
        self._site = 0  # index of the replica in use
        self.username = username
        self.password = password
        self.project_name = project_name
        self.region = region
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._expires = 0.0
        self._endpoints: dict[str, str] = {}
        self._auth_lock = asyncio.Lock()

    @property
    def auth_url(self) -> str:
        """The identity endpoint of the replica in use."""
        return self.auth_urls[self._site]

    def _fail_over(self, site: int) -> bool:
        """Move to the replica after `site` (if nobody moved meanwhile); its token and
        catalog are fetched anew. False when there is only one."""
        if len(self.auth_urls) < 2:
            return False
        if self._site == site:
            self._site = (site + 1) % len(self.auth_urls)
            self._token = None
            self._endpoints = {}
        return True

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (a later request opens a new one)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def closed(self) -> bool:
        """True while the client holds no open session (before the first request, after
        close())."""
        return self._session is None or self._session.closed

    def _http(self) -> aiohttp.ClientSession:
        # Made lazily: an aiohttp session binds to the running loop.
        if self._session is None:
            connector = (aiohttp.TCPConnector(ssl=self.ssl_context)
                         if self.ssl_context is not None else None)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    # ---- authentication -------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._token

    async def authenticate(self) -> str:
        """Get a fresh token (and endpoints from its catalog)."""
        if self.auth_url.endswith("/v2.0"):
            url = self.auth_url + "/tokens"
            body: dict[str, Any] = {"auth": {
                "passwordCredentials": {"username": self.username, "password": self.password},
                "tenantName": self.project_name}}
        else:
            base = self.auth_url if self.auth_url.endswith("/v3") else self.auth_url + "/v3"
            url = base + "/auth/tokens"
            body = {"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": self.username, "password": self.password,
                    "domain": {"name": "Default"}}}},
                "scope": {"project": {"name": self.project_name,
                                      "domain": {"name": "Default"}}}}}
        status, headers, text = await self._send("POST", url, body, token=None)
        if status >= 400:
            raise _error_from(status, text)
        data = json.loads(text)
        if "access" in data:
            access = data["access"]
            self._token = access["token"]["id"]
            self._expires = _parse_time(access["token"].get("expires"))
            self._endpoints = self._v2_endpoints(access.get("serviceCatalog", []))
        else:
            self._token = headers.get("X-Subject-Token")
            self._expires = _parse_time(data["token"].get("expires_at"))
            self._endpoints = self._v3_endpoints(data["token"].get("catalog", []))
        if not self._token:
            raise ApiError(status, "HTTPError", "the identity answer carried no token")
        return self._token

    def _v3_endpoints(self, catalog: Sequence[dict[str, Any]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for service in catalog:
            for ep in service.get("endpoints", []):
                if ep.get("interface") != "public":
                    continue
                if self.region and ep.get("region") not in (None, self.region):
                    continue
                out.setdefault(service.get("type", ""), ep["url"].rstrip("/"))
        return out

    def _v2_endpoints(self, catalog: Sequence[dict[str, Any]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for service in catalog:
            for ep in service.get("endpoints", []):
                if self.region and ep.get("region") not in (None, self.region):
                    continue
                out.setdefault(service.get("type", ""), ep["publicURL"].rstrip("/"))
        return out

    async def _ensure_token(self) -> str:
        async with self._auth_lock:
            if self._token is None or time.time() > self._expires - RENEW_MARGIN:
                await self.authenticate()
            assert self._token is not None
            return self._token

    def _base(self, service: str) -> str:
        if service in self._endpoints:
            return self._endpoints[service]
        root = self.auth_url.removesuffix("/v3").removesuffix("/v2.0")
        return root + ("/v2.1" if service == "compute" else "")

    # ---- transport --------------------------------------------------------------------------

    async def _send(self, method: str, url: str, body: Any, *, token: str | None,
                    params: Sequence[tuple[str, str]] = (),
                    timeout: float | None = None,
                    extra: Mapping[str, str] | None = None) -> tuple[int, Mapping[str, str], str]:
        headers = {"Accept": "application/json", **(extra or {})}
        if token:
            headers["X-Auth-Token"] = token
        try:
            async with self._http().request(
                method, url, json=body, params=list(params), headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:
                return resp.status, resp.headers, await resp.text()
        except aiohttp.ClientConnectorError as exc:
            raise ApiConnectionError(f"cannot reach {url}: {exc}", sent=False) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiConnectionError(f"cannot reach {url}: {exc or type(exc).__name__}"
                                     ) from exc

    async def request(self, method: str, service: str, path: str, body: Any = None, *,
                      params: Sequence[tuple[str, str]] = (),
                      timeout: float | None = None) -> Any:
        """One authenticated call; re-authenticates once on a 401, fails over between
        replicas as the module docstring says. Returns the JSON body."""
        tries = len(self.auth_urls)
        for attempt in range(tries):
            site = self._site
            try:
                status, text = await self._request_here(method, service, path, body,
                                                        params=params, timeout=timeout)
            except ApiConnectionError as exc:
                # Sent again only when that cannot write twice.
                if attempt + 1 < tries and (not exc.sent or method in _IDEMPOTENT) \
                        and self._fail_over(site):
                    continue
                raise
            except ApiError as exc:
                # Only authentication raises here: a replica without its database.
                if exc.status == 503 and attempt + 1 < tries and self._fail_over(site):
                    continue
                raise
            if status == 503 and method in _IDEMPOTENT and attempt + 1 < tries \
                    and self._fail_over(site):
                continue
            if status >= 400:
                raise _error_from(status, text)
            return json.loads(text) if text.strip() else None
        raise AssertionError("unreachable")

    async def _request_here(self, method: str, service: str, path: str, body: Any, *,
                            params: Sequence[tuple[str, str]], timeout: float | None
                            ) -> tuple[int, str]:
        """The call on the replica in use; re-authenticates once on a 401."""
        for attempt in (1, 2):
            try:
                token = await self._ensure_token()
            except ApiConnectionError as exc:
                # The request itself was not sent (and a token POST writes nothing that a
                # second one could double).
                raise ApiConnectionError(str(exc), sent=False) from exc
            status, _, text = await self._send(method, self._base(service) + path, body,
                                               token=token, params=params, timeout=timeout,
                                               extra=COMPUTE_HEADERS if service == "compute"
                                               else None)
            if status == 401 and attempt == 1:
                async with self._auth_lock:
                    if self._token == token:
                        self._token = None
                continue
            return status, text
        raise AssertionError("unreachable")

    # ---- resources --------------------------------------------------------------------------

    @staticmethod
    def _resource(resource: str) -> tuple[str, str, str]:
        try:
            return RESOURCES[resource]
        except KeyError:
            raise ValueError(f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}"
                             ) from None

    async def list(self, resource: str, *, page_size: int | None = LIST_PAGE_SIZE,
                   each: Callable[[dict[str, Any]], Any] | None = None,
                   **filters: Any) -> list[Any]:
        """List `resource` with Neutron filters; a list value repeats the key (OR).

        Networking lists are read in pages of `page_size` (limit/marker, following the
        `<collection>_links` next marker) so a snapshot of a large cloud never asks the API
        for one unbounded answer; None reads the list in one request. `each` turns every row
        into what is kept, page by page (the agents keep compact rows: a whole listing of
        100k ports as dicts never exists at once)."""
        service, path, key = self._resource(resource)
        if resource == "servers":
            path += "/detail"
        params = _query(filters)
        if page_size is None or resource not in PAGED_RESOURCES:
            data = await self.request("GET", service, path, params=params)
            items = data[resource]
            if resource == "keypairs":  # Nova wraps each item
                items = [i["keypair"] for i in items]
            return [each(i) for i in items] if each is not None else list(items)
        out: list[Any] = []
        marker: str | None = None
        while True:
            query = [*params, ("limit", str(page_size))]
            if marker is not None:
                query.append(("marker", marker))
            data = await self.request("GET", service, path, params=query)
            out.extend(data[resource] if each is None else map(each, data[resource]))
            marker = _next_marker(data.get(f"{resource}_links", ()))
            del data  # the page's dicts go before the next page is read
            if marker is None:
                return out

    async def get(self, resource: str, rid: str) -> dict[str, Any]:
        service, path, key = self._resource(resource)
        data = await self.request("GET", service, f"{path}/{rid}")
        return dict(data[key])

    async def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create from the inner attributes (`{"name": ...}`; the wrapper key is added)."""
        service, path, key = self._resource(resource)
        data = await self.request("POST", service, path, {key: dict(body)})
        return dict(data[key])

    async def update(self, resource: str, rid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        service, path, key = self._resource(resource)
        data = await self.request("PUT", service, f"{path}/{rid}", {key: dict(body)})
        return dict(data[key])

    async def delete(self, resource: str, rid: str) -> None:
        service, path, _ = self._resource(resource)
        await self.request("DELETE", service, f"{path}/{rid}")

    async def router_interface(self, router_id: str, action: str, *,
                               subnet_id: str | None = None,
                               port_id: str | None = None) -> dict[str, Any]:
        """`action` is "add" or "remove"."""
        if action not in ("add", "remove"):
            raise ValueError("action must be add or remove")
        body = {k: v for k, v in (("subnet_id", subnet_id), ("port_id", port_id)) if v}
        data = await self.request("PUT", "network",
                                  f"/v2.0/routers/{router_id}/{action}_router_interface", body)
        return dict(data)

    async def changes(self, since: int, timeout: float = 0.0,
                      limit: int | None = None) -> ChangesPage:
        """Long-poll the change feed (admin or service role)."""
        params = [("since", str(since)), ("timeout", str(timeout))]
        if limit is not None:
            params.append(("limit", str(limit)))
        data = await self.request("GET", "network", "/v2.0/changes", params=params,
                                  timeout=self.timeout + timeout)
        return ChangesPage(list(data["changes"]), int(data["revision"]),
                           int(data["current_revision"]))


def check_credentials(auth_url: str | None, username: str | None, password: str | None,
                      project_name: str | None, where: str = "[DEFAULT]") -> None:
    """MissingCredentials naming every unset option of auth_url, admin_user, admin_password
    and admin_tenant_name (`where` says which file and section)."""
    missing = [name for name, value in (
        ("auth_url", auth_url), ("admin_user", username), ("admin_password", password),
        ("admin_tenant_name", project_name),
    ) if not value]
    if missing:
        raise MissingCredentials(f"{where} needs {', '.join(missing)} to reach the "
                                 "control-plane API")


def control_client(auth_url: str | None, username: str | None, password: str | None,
                   project_name: str | None, *, region: str | None = None,
                   insecure: bool = False, ca_cert: str | None = None,
                   where: str = "[DEFAULT]") -> ControlClient:
    """The agents' client from their auth options (see `check_credentials`). The client owns
    its session: close() it."""
    check_credentials(auth_url, username, password, project_name, where)
    assert auth_url is not None and username and password and project_name
    ctx = client_ssl_context(insecure, ca_cert) if auth_url.startswith("https:") else None
    return ControlClient(auth_url, username, password, project_name, region=region or None,
                         ssl_context=ctx)


def control_client_from_conf(conf: ConfigOpts, where: str = "[DEFAULT]") -> ControlClient:
    """`control_client` from a loaded ConfigOpts with the agents' AUTH_OPTS (auth_url,
    admin_user, admin_password, admin_tenant_name, auth_region, auth_insecure, auth_ca_cert).
    Call inside the running loop that will use it."""
    return control_client(conf.auth_url, conf.admin_user, conf.admin_password,
                          conf.admin_tenant_name, region=conf.auth_region,
                          insecure=bool(conf.auth_insecure), ca_cert=conf.auth_ca_cert,
                          where=where)


class SyncControlClient:
    """Blocking wrapper for the CLI: the same methods, run on a private event loop."""

    def __init__(self, auth_url: str, username: str, password: str, project_name: str,
                 **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = ControlClient(auth_url, username, password, project_name, **kwargs)

    def _run(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def close(self) -> None:
        self._run(self._client.close())
        self._runner.close()

    def __enter__(self) -> SyncControlClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, service: str, path: str, body: Any = None,
                **kwargs: Any) -> Any:
        return self._run(self._client.request(method, service, path, body, **kwargs))

    def list(self, resource: str, **filters: Any) -> list[dict[str, Any]]:
        return self._run(self._client.list(resource, **filters))  # type: ignore[no-any-return]

    def get(self, resource: str, rid: str) -> dict[str, Any]:
        return self._run(self._client.get(resource, rid))  # type: ignore[no-any-return]

    def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(self._client.create(resource, body))  # type: ignore[no-any-return]

    def update(self, resource: str, rid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(self._client.update(resource, rid, body))  # type: ignore[no-any-return]

    def delete(self, resource: str, rid: str) -> None:
        self._run(self._client.delete(resource, rid))

    def router_interface(self, router_id: str, action: str, **kwargs: Any) -> dict[str, Any]:
        return self._run(  # type: ignore[no-any-return]
            self._client.router_interface(router_id, action, **kwargs))

    def changes(self, since: int, timeout: float = 0.0, limit: int | None = None) -> ChangesPage:
        return self._run(self._client.changes(since, timeout, limit))  # type: ignore[no-any-return]
