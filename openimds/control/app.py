"""The aiohttp application: one route table, one adapter, one error edge.

Every route is a `Route` naming a sync operation (see call.py). The adapter authenticates the
X-Auth-Token, parses the JSON body, runs the operation in a worker thread (the database is sync
SQLAlchemy; the event loop must never wait on it) and writes the Reply. The error middleware is
the one place exceptions become HTTP: ApiError and inventory errors keep their status, anything
else is logged and answered with a bare 500 body (never a traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from openimds.control import (
    agents,
    auth,
    changes,
    extensions,
    flavors,
    identity,
    images,
    keypairs,
    metadata_options,
    networks,
    ports,
    routers,
    security_groups,
    server_actions,
    servers,
    subnets,
    tags,
    versions,
)
from openimds.control.call import Call, Operation, Reply, Settings
from openimds.control.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    error_body,
    flavor_for_path,
    for_status,
    from_inventory,
)
from openimds.control.pruner import prune_forever
from openimds.control.rescheduler import failover_forever
from openimds.edge import edge_logger
from openimds.inventory.errors import InventoryError
from openimds.inventory.store import Store

LOG = logging.getLogger(__name__)

# Bodies above this are refused by aiohttp with a 413 before we parse them; user data (64 KiB
# decoded, ~88 KiB as base64) fits well inside.
MAX_BODY = 1024 * 1024
# Seconds a client is asked to wait (Retry-After) when the inventory database is away.
RETRY_AFTER = 5


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    op: Operation
    summary: str
    body: str | None = None  # OpenAPI request schema name
    auth: bool = True
    long_poll: bool = False
    tag: str = "network"
    # The body is handed over as bytes, not parsed as JSON (image uploads).
    raw_body: bool = False


def _crud(plural: str, singular: str, mod: Any, *, update: bool = True) -> list[Route]:
    base = f"/v2.0/{plural}"
    title = singular.capitalize()
    out = [
        Route("GET", base, getattr(mod, f"list_{plural}"), f"List {plural}"),
        Route("POST", base, getattr(mod, f"create_{singular}"), f"Create a {singular}",
              f"{title}Create"),
        Route("GET", base + "/{id}", getattr(mod, f"show_{singular}"), f"Show a {singular}"),
        Route("DELETE", base + "/{id}", getattr(mod, f"delete_{singular}"),
              f"Delete a {singular}"),
    ]
    if update:
        out.append(Route("PUT", base + "/{id}", getattr(mod, f"update_{singular}"),
                         f"Update a {singular}", f"{title}Update"))
    return out


def _unauthenticated(path: str, op: Operation, summary: str, tag: str) -> list[Route]:
    """A version document, served at `path` and `path/` without a token."""
    return [Route("GET", p, op, summary, auth=False, tag=tag) for p in (path, path + "/")]


ROUTES: tuple[Route, ...] = (
    Route("GET", "/", versions.root_versions, "List the API versions", auth=False,
          tag="versions"),
    *_unauthenticated("/v2.1", versions.show_compute_version,
                      "Compute API version (microversion range)", "compute"),
    *_unauthenticated("/v3", versions.show_identity_version, "Identity API version",
                      "identity"),
    *_unauthenticated("/image", versions.image_versions, "Image API versions", "image"),
    *_unauthenticated("/v2.0", versions.show_v2_version,
                      "Identity v2.0 version and network resource index", "versions"),
    Route("GET", "/v2.0/extensions", extensions.list_extensions, "List the API extensions"),
    Route("GET", "/v2.0/extensions/{alias}", extensions.show_extension, "Show an extension"),
    Route("GET", "/v2.0/availability_zones", extensions.list_availability_zones,
          "List network availability zones"),
    Route("POST", "/v3/auth/tokens", auth.post_v3_token, "Issue a token (Keystone v3)",
          "V3Auth", auth=False, tag="identity"),
    Route("GET", "/v3/auth/tokens", identity.validate_subject_token,
          "Validate the X-Subject-Token", tag="identity"),
    Route("HEAD", "/v3/auth/tokens", identity.validate_subject_token,
          "Check the X-Subject-Token", tag="identity"),
    Route("DELETE", "/v3/auth/tokens", identity.revoke_subject_token,
          "Revoke the X-Subject-Token", tag="identity"),
    Route("GET", "/v3/auth/projects", identity.list_my_projects,
          "Projects the token's user may scope to", tag="identity"),
    Route("GET", "/v3/projects", identity.list_projects, "List projects", tag="identity"),
    Route("POST", "/v3/projects", identity.create_project, "Create a project (admin)",
          "ProjectCreate", tag="identity"),
    Route("GET", "/v3/projects/{id}", identity.show_project, "Show a project", tag="identity"),
    Route("PATCH", "/v3/projects/{id}", identity.update_project, "Update a project (admin)",
          "ProjectUpdate", tag="identity"),
    Route("DELETE", "/v3/projects/{id}", identity.delete_project, "Delete a project (admin)",
          tag="identity"),
    Route("GET", "/v3/users", identity.list_users, "List users", tag="identity"),
    Route("POST", "/v3/users", identity.create_user, "Create a user (admin)", "UserCreate",
          tag="identity"),
    Route("GET", "/v3/users/{id}", identity.show_user, "Show a user", tag="identity"),
    Route("PATCH", "/v3/users/{id}", identity.update_user, "Update a user (admin)",
          "UserUpdate", tag="identity"),
    Route("DELETE", "/v3/users/{id}", identity.delete_user, "Delete a user (admin)",
          tag="identity"),
    Route("GET", "/v3/users/{id}/projects", identity.list_my_projects,
          "Projects a user holds a role on", tag="identity"),
    Route("GET", "/v3/roles", identity.list_roles, "List roles", tag="identity"),
    Route("GET", "/v3/roles/{id}", identity.show_role, "Show a role", tag="identity"),
    Route("GET", "/v3/domains", identity.list_domains, "List domains (Default)",
          tag="identity"),
    Route("GET", "/v3/domains/{id}", identity.show_domain, "Show a domain", tag="identity"),
    Route("GET", "/v3/projects/{project_id}/users/{user_id}/roles",
          identity.list_user_project_roles, "A user's roles on a project", tag="identity"),
    Route("PUT", "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
          identity.grant_role, "Grant a role on a project (admin)", tag="identity"),
    Route("HEAD", "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
          identity.check_role, "Check a role assignment", tag="identity"),
    Route("DELETE", "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
          identity.revoke_role, "Revoke a role on a project (admin)", tag="identity"),
    Route("GET", "/v3/role_assignments", identity.list_role_assignments,
          "List role assignments", tag="identity"),
    Route("POST", "/v2.0/tokens", auth.post_v2_token, "Issue a token (Keystone v2.0)",
          "V2Auth", auth=False, tag="identity"),
    *_crud("networks", "network", networks),
    *_crud("subnets", "subnet", subnets),
    *_crud("ports", "port", ports),
    *_crud("routers", "router", routers),
    Route("GET", "/v2.0/security-groups", security_groups.list_security_groups,
          "List security groups"),
    Route("POST", "/v2.0/security-groups", security_groups.create_security_group,
          "Create a security group", "SecurityGroupCreate"),
    Route("GET", "/v2.0/security-groups/{id}", security_groups.show_security_group,
          "Show a security group"),
    Route("PUT", "/v2.0/security-groups/{id}", security_groups.update_security_group,
          "Update a security group", "SecurityGroupUpdate"),
    Route("DELETE", "/v2.0/security-groups/{id}", security_groups.delete_security_group,
          "Delete a security group"),
    Route("GET", "/v2.0/security-group-rules", security_groups.list_security_group_rules,
          "List security group rules"),
    Route("POST", "/v2.0/security-group-rules", security_groups.create_security_group_rule,
          "Create a security group rule", "SecurityGroupRuleCreate"),
    Route("GET", "/v2.0/security-group-rules/{id}", security_groups.show_security_group_rule,
          "Show a security group rule"),
    Route("DELETE", "/v2.0/security-group-rules/{id}",
          security_groups.delete_security_group_rule, "Delete a security group rule"),
    Route("GET", "/v2.0/{collection}/{id}/tags", tags.list_tags, "List a resource's tags"),
    Route("PUT", "/v2.0/{collection}/{id}/tags", tags.replace_tags,
          "Replace a resource's tags", "Tags"),
    Route("DELETE", "/v2.0/{collection}/{id}/tags", tags.delete_tags,
          "Remove all of a resource's tags"),
    Route("GET", "/v2.0/{collection}/{id}/tags/{tag}", tags.show_tag, "Check a tag"),
    Route("PUT", "/v2.0/{collection}/{id}/tags/{tag}", tags.add_tag, "Add a tag"),
    Route("DELETE", "/v2.0/{collection}/{id}/tags/{tag}", tags.remove_tag, "Remove a tag"),
    Route("PUT", "/v2.0/routers/{id}/add_router_interface", routers.add_router_interface,
          "Attach a subnet or port to a router", "RouterInterface"),
    Route("PUT", "/v2.0/routers/{id}/remove_router_interface",
          routers.remove_router_interface, "Detach a subnet or port from a router",
          "RouterInterface"),
    # The agent registry (several hosts).
    Route("GET", "/v2.0/agents", agents.list_agents, "List agents"),
    Route("POST", "/v2.0/agents", agents.report_state,
          "Report an agent's state (openimds agents; Neutron uses RPC)"),
    Route("GET", "/v2.0/agents/{id}", agents.show_agent, "Show an agent"),
    Route("PUT", "/v2.0/agents/{id}", agents.update_agent, "Update an agent"),
    Route("DELETE", "/v2.0/agents/{id}", agents.delete_agent, "Delete a dead agent"),
    Route("GET", "/v2.0/agents/{id}/dhcp-networks", agents.agent_dhcp_networks,
          "Networks a DHCP agent serves"),
    Route("POST", "/v2.0/agents/{id}/dhcp-networks", agents.add_dhcp_network,
          "Schedule a network to a DHCP agent"),
    Route("DELETE", "/v2.0/agents/{id}/dhcp-networks/{network_id}",
          agents.remove_dhcp_network, "Remove a network from a DHCP agent"),
    Route("GET", "/v2.0/networks/{id}/dhcp-agents", agents.network_dhcp_agents,
          "DHCP agents serving a network"),
    Route("GET", "/v2.0/agents/{id}/l3-routers", agents.agent_l3_routers,
          "Routers an L3 agent hosts"),
    Route("GET", "/v2.0/routers/{id}/l3-agents", agents.router_l3_agents,
          "The L3 agent hosting a router"),
    Route("GET", "/v2.0/changes", changes.get_changes, "Long-poll the change feed",
          long_poll=True),
    Route("GET", "/v2.1/servers", servers.list_servers, "List servers (brief)", tag="compute"),
    Route("GET", "/v2.1/servers/detail", servers.list_servers_detail, "List servers (detail)",
          tag="compute"),
    Route("POST", "/v2.1/servers", servers.create_server, "Create a server", "ServerCreate",
          tag="compute"),
    Route("GET", "/v2.1/servers/{id}", servers.show_server, "Show a server", tag="compute"),
    Route("DELETE", "/v2.1/servers/{id}", servers.delete_server, "Delete a server",
          tag="compute"),
    Route("GET", "/v2.1/servers/{id}/metadata-options", metadata_options.show_metadata_options,
          "Show a server's metadata options and token usage", tag="compute"),
    Route("PUT", "/v2.1/servers/{id}/metadata-options",
          metadata_options.update_metadata_options, "Set a server's metadata options",
          tag="compute"),
    Route("GET", "/v2.1/os-metadata-token-usage", metadata_options.list_token_usage,
          "Session-token usage per server", tag="compute"),
    Route("GET", "/v2.1/os-metadata-identity-certificate", metadata_options.identity_certificate,
          "Certificate of the instance identity document signer", tag="compute"),
    Route("PUT", "/v2.1/servers/{id}", server_actions.update_server, "Rename a server",
          "ServerUpdate", tag="compute"),
    Route("GET", "/v2.1/servers/{id}/metadata", server_actions.show_metadata,
          "Show a server's metadata", tag="compute"),
    Route("PUT", "/v2.1/servers/{id}/metadata", server_actions.replace_metadata,
          "Replace a server's metadata", "ServerMetadata", tag="compute"),
    Route("POST", "/v2.1/servers/{id}/metadata", server_actions.update_metadata,
          "Add to a server's metadata", "ServerMetadata", tag="compute"),
    Route("GET", "/v2.1/servers/{id}/metadata/{key}", server_actions.show_metadata_item,
          "Show one metadata item", tag="compute"),
    Route("PUT", "/v2.1/servers/{id}/metadata/{key}", server_actions.set_metadata_item,
          "Set one metadata item", "ServerMetaItem", tag="compute"),
    Route("DELETE", "/v2.1/servers/{id}/metadata/{key}", server_actions.delete_metadata_item,
          "Delete one metadata item", tag="compute"),
    Route("GET", "/v2.1/servers/{id}/tags", server_actions.list_tags,
          "List a server's tags (2.26+)", tag="compute"),
    Route("PUT", "/v2.1/servers/{id}/tags", server_actions.replace_tags,
          "Replace a server's tags (2.26+)", "ServerTags", tag="compute"),
    Route("DELETE", "/v2.1/servers/{id}/tags", server_actions.delete_tags,
          "Delete all of a server's tags (2.26+)", tag="compute"),
    Route("GET", "/v2.1/servers/{id}/tags/{tag}", server_actions.check_tag,
          "Check a server tag (2.26+)", tag="compute"),
    Route("PUT", "/v2.1/servers/{id}/tags/{tag}", server_actions.add_tag,
          "Add a server tag (2.26+)", tag="compute"),
    Route("DELETE", "/v2.1/servers/{id}/tags/{tag}", server_actions.delete_tag,
          "Delete a server tag (2.26+)", tag="compute"),
    Route("GET", "/v2.1/servers/{id}/os-security-groups",
          server_actions.list_server_security_groups, "A server's security groups",
          tag="compute"),
    Route("POST", "/v2.1/servers/{id}/action", server_actions.server_action,
          "Add or remove a server's security group", "ServerAction", tag="compute"),
    Route("GET", "/v2.1/os-availability-zone", server_actions.list_availability_zones,
          "List availability zones", tag="compute"),
    Route("GET", "/v2.1/flavors", flavors.list_flavors, "List flavors", tag="compute"),
    Route("GET", "/v2.1/flavors/detail", flavors.list_flavors_detail, "List flavors (detail)",
          tag="compute"),
    Route("POST", "/v2.1/flavors", flavors.create_flavor, "Create a flavor (admin)",
          "FlavorCreate", tag="compute"),
    Route("GET", "/v2.1/flavors/{id}", flavors.show_flavor, "Show a flavor", tag="compute"),
    Route("DELETE", "/v2.1/flavors/{id}", flavors.delete_flavor, "Delete a flavor (admin)",
          tag="compute"),
    Route("GET", "/v2.1/flavors/{id}/os-extra_specs", flavors.show_extra_specs,
          "A flavor's extra specs (always none)", tag="compute"),
    Route("GET", "/image/v2/images", images.list_images, "List images", tag="image"),
    Route("POST", "/image/v2/images", images.create_image, "Create an image record",
          "ImageCreate", tag="image"),
    Route("GET", "/image/v2/images/{id}", images.show_image, "Show an image", tag="image"),
    Route("PUT", "/image/v2/images/{id}/file", images.upload_image_file,
          "Upload image data (measured, not kept)", tag="image", raw_body=True),
    Route("DELETE", "/image/v2/images/{id}", images.delete_image, "Delete an image",
          tag="image"),
    Route("GET", "/v2.1/os-keypairs", keypairs.list_keypairs, "List key pairs", tag="compute"),
    Route("POST", "/v2.1/os-keypairs", keypairs.create_keypair, "Import a key pair",
          "KeypairCreate", tag="compute"),
    Route("GET", "/v2.1/os-keypairs/{name}", keypairs.show_keypair, "Show a key pair",
          tag="compute"),
    Route("DELETE", "/v2.1/os-keypairs/{name}", keypairs.delete_keypair, "Delete a key pair",
          tag="compute"),
)

STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", Settings)
POOLS = web.AppKey("pools", dict)
PRUNER = web.AppKey("pruner", dict)


def render(reply: Reply) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    return web.json_response(reply.body, status=reply.status, headers=reply.headers)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.", type="MalformedRequestBody"
                         ) from None


def _adapter(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        app = request.app
        store, settings = app[STORE], app[SETTINGS]
        loop = asyncio.get_running_loop()
        pool = app[POOLS]["long_poll" if route.long_poll else "default"]
        token = request.headers.get("X-Auth-Token")
        if route.auth and not token:
            auth.validate_token(store, token)  # raises the 401 without touching the database
        if route.raw_body:
            body: Any = await request.read()
        else:
            body = (await _json_body(request) if request.method in ("POST", "PUT", "PATCH")
                    else None)
        call = Call(store=store, settings=settings, ctx=None, params=dict(request.match_info),
                    query=list(request.query.items()), body=body,
                    base_url=f"{request.scheme}://{request.host}", headers=request.headers)
        compute = route.tag == "compute" and route.auth
        if compute:
            call.microversion = versions.parse_microversion(request.headers)
        # One worker-thread hop per request: the token check and the operation together.
        reply = await loop.run_in_executor(pool, partial(_authenticated, route, call, token))
        if compute:
            reply.headers.update(versions.microversion_headers(call.microversion))
        return render(reply)

    handler.__name__ = route.op.__name__
    return handler


def _authenticated(route: Route, call: Call, token: str | None) -> Reply:
    if route.auth:
        call.ctx = auth.validate_token(call.store, token)
        if (call.ctx.read_only and route.method not in ("GET", "HEAD")
                and not route.path.startswith("/v3/auth/")):
            raise Forbidden("The reader role may read its project but not change anything.")
    return route.op(call)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        err = exc
    except InventoryError as exc:
        err = from_inventory(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        messages = {404: "The resource could not be found.",
                    405: f"The method {request.method} is not allowed on {request.path}.",
                    413: f"The request body is larger than {MAX_BODY} bytes."}
        err = for_status(exc.status, messages.get(exc.status, exc.reason))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        LOG.exception("unhandled error in %s %s", request.method, request.path)
        err = ApiError("Request failed: an internal server error occurred (see the server "
                       "log).")
    response = web.json_response(error_body(err, flavor_for_path(request.path)),
                                 status=err.status)
    if err.status == 503:
        # The database is away (StoreUnavailable): a retry is the right thing to do.
        response.headers["Retry-After"] = str(RETRY_AFTER)
    if err.status == 401:
        response.headers["WWW-Authenticate"] = (
            f'Keystone uri="{request.scheme}://{request.host}/v3"')
    return response


async def _openapi(request: web.Request) -> web.Response:
    from openimds.control.openapi import openapi_document

    return web.json_response(openapi_document(ROUTES))


async def _start_pools(app: web.Application) -> None:
    # Separate pools: long polls park a thread each for up to max_changes_timeout, and must not
    # starve ordinary requests of workers.
    app[POOLS]["default"] = ThreadPoolExecutor(32, thread_name_prefix="control-db")
    app[POOLS]["long_poll"] = ThreadPoolExecutor(256, thread_name_prefix="control-poll")


async def _start_pruner(app: web.Application) -> None:
    settings = app[SETTINGS]
    if settings.change_prune_interval > 0:
        app[PRUNER]["task"] = asyncio.create_task(
            prune_forever(app[STORE], settings.change_retention, settings.change_prune_interval),
            name="change-feed-pruner")
    if settings.allow_automatic_dhcp_failover or settings.allow_automatic_l3agent_failover:
        app[PRUNER]["failover"] = asyncio.create_task(
            failover_forever(app[STORE], settings), name="agent-failover")


async def _stop_pruner(app: web.Application) -> None:
    for name in ("task", "failover", "metadata_ports"):
        task = app[PRUNER].pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _release_long_polls(app: web.Application) -> None:
    # Parked long polls would hold shutdown for up to their timeout; answer them now (empty).
    app[STORE].release_waiters()


async def _stop_pools(app: web.Application) -> None:
    for pool in app[POOLS].values():
        pool.shutdown(wait=False, cancel_futures=True)


async def _sync_metadata_ports(app: web.Application) -> None:
    # Level-triggered on start: [DEFAULT] metadata_mode decides which networks hold a
    # distributed metadata port, and a port retiring after a switch back to network_node is
    # deleted at its deadline (control/distributed_metadata.py). In the background: a
    # database away now is retried, subnet writes keep each network right meanwhile.
    from openimds.control.distributed_metadata import retire_forever

    settings = app[SETTINGS]
    app[PRUNER]["metadata_ports"] = asyncio.create_task(
        retire_forever(app[STORE], settings.metadata_mode, settings.dhcp_lease_duration),
        name="metadata-ports")


def build_app(store: Store, settings: Settings | None = None) -> web.Application:
    """The control-plane API over `store`."""
    # logger: requests aiohttp cannot parse are logged as one line, without a traceback.
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY,
                          handler_args={"logger": edge_logger("openimds.control.http")})
    app[STORE] = store
    app[SETTINGS] = settings or Settings()
    app[POOLS] = {}
    app[PRUNER] = {}
    app.on_startup.append(_start_pools)
    app.on_startup.append(_start_pruner)
    app.on_startup.append(_sync_metadata_ports)
    app.on_shutdown.append(_stop_pruner)
    app.on_shutdown.append(_release_long_polls)
    app.on_cleanup.append(_stop_pools)
    app.router.add_get("/openapi.json", _openapi)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _adapter(route))
    return app
