"""Identity: users, projects, tokens, and the Keystone v3 / legacy v2.0 token routes.

Tokens are ``secrets.token_urlsafe(32)``; only their SHA-256 is stored, with the roles and project
they were scoped to and an expiry (`Settings.token_expiration`). A token is valid while its row
exists, has not expired and its user is still enabled.

Scoping: a user holds its roles in its own project. It may ask for a token scoped to that project
(by name or id), or send no scope at all (scoped to it anyway); any other project is a 401.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openimds.control.call import Call, Reply
from openimds.control.context import ROLES, RequestContext
from openimds.control.errors import BadRequest, Conflict, Unauthorized
from openimds.control.passwords import dummy_hash, hash_password, verify_password
from openimds.control.serializers import iso
from openimds.inventory.models import Project, RoleAssignment, Token, User
from openimds.inventory.store import Store

DOMAIN = {"id": "default", "name": "Default"}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    context: RequestContext
    issued_at: datetime
    expires_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def issue_token(store: Store, username: str, password: str, *, project_name: str | None = None,
                project_id: str | None = None, user_id: str | None = None,
                ttl: int = 3600) -> IssuedToken:
    """Check the password and store a new token; Unauthorized on any mismatch (one message)."""
    denied = Unauthorized("The request you have made requires authentication: wrong user name, "
                          "password or project.")
    with store.session() as s:
        if user_id:
            user = s.get(User, user_id)
        else:
            user = s.scalars(select(User).where(User.name == username)).first()
        # Always run the KDF so an unknown user costs the same time as a wrong password.
        ok = verify_password(password, user.password_hash if user else dummy_hash())
        if user is None or not ok or not user.enabled:
            raise denied
        if project_id:
            project = s.get(Project, project_id)
        elif project_name:
            project = s.scalars(select(Project).where(Project.name == project_name)).first()
        else:
            project = s.get(Project, user.project_id) if user.project_id else None
        if project is None or not project.enabled or (
                project_name and project_name != project.name):
            raise denied
        roles = tuple(roles_on(s, user, project.id))
        if not roles:
            raise denied
        now = _now()
        # Expired rows are dropped here so the table stays small without a separate sweeper.
        s.execute(delete(Token).where(Token.expires_at < now))
        token = secrets.token_urlsafe(32)
        expires = now + timedelta(seconds=ttl)
        s.add(Token(token_hash=token_hash(token), user_id=user.id, project_id=project.id,
                    roles=list(roles), issued_at=now, expires_at=expires))
        ctx = RequestContext(user.id, user.name, project.id, project.name, roles)
    return IssuedToken(token, ctx, now, expires)


def roles_on(s: Session, user: User, project_id: str) -> list[str]:
    """The user's roles on a project: those it holds on its default project (`users.roles`,
    round 1) plus its role assignments there, in ROLES order."""
    held = set(user.roles or []) if user.project_id == project_id else set()
    held.update(s.scalars(select(RoleAssignment.role).where(
        RoleAssignment.user_id == user.id, RoleAssignment.project_id == project_id)))
    return [r for r in ROLES if r in held]


def validate_token(store: Store, token: str | None) -> RequestContext:
    if not token:
        raise Unauthorized("Authentication required: send a token in X-Auth-Token "
                           "(POST /v3/auth/tokens issues one).")
    if not token.isascii():
        # Tokens we issue are URL-safe ASCII; other bytes could not even be hashed.
        raise Unauthorized("The token is invalid or has expired; authenticate again.")
    with store.read() as s:
        # One indexed query per request: the token row (primary key) with its user and project.
        row = s.execute(
            select(Token.expires_at, Token.roles, User.id, User.name, Project.id, Project.name)
            .join(User, User.id == Token.user_id).join(Project, Project.id == Token.project_id)
            .where(Token.token_hash == token_hash(token), User.enabled.is_(True),
                   Project.enabled.is_(True))
        ).first()
    if row is None or _aware(row[0]) <= _now():
        raise Unauthorized("The token is invalid or has expired; authenticate again.")
    expires_at, roles, user_id, user_name, project_id, project_name = row
    return RequestContext(user_id, user_name, project_id, project_name, tuple(roles))


# ---- administration (server-side commands write the database directly) -----------------------


def create_project(store: Store, name: str, description: str = "", *,
                   exist_ok: bool = False) -> str:
    with store.session() as s:
        found = s.scalars(select(Project).where(Project.name == name)).first()
        if found is not None:
            if exist_ok:
                return found.id
            raise Conflict(f"project {name!r} already exists")
        project = Project(name=name, description=description)
        s.add(project)
        s.flush()
        return project.id


def create_user(store: Store, name: str, password: str, project: str, role: str = "member",
                *, exist_ok: bool = False) -> str:
    """Create a user in `project` (name or id). With `exist_ok`, reset an existing user's
    password, project and role instead (what bootstrap needs to be idempotent)."""
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if not password:
        raise BadRequest("a password is required")
    with store.session() as s:
        proj = s.get(Project, project) or s.scalars(
            select(Project).where(Project.name == project)).first()
        if proj is None:
            raise BadRequest(f"project {project!r} does not exist; create it first "
                             f"(openimds project create {project})")
        user = s.scalars(select(User).where(User.name == name)).first()
        if user is not None and not exist_ok:
            raise Conflict(f"user {name!r} already exists")
        if user is None:
            user = User(name=name, project_id=proj.id, password_hash=hash_password(password),
                        roles=[role])
            s.add(user)
        else:
            if not verify_password(password, user.password_hash):
                user.password_hash = hash_password(password)
            user.project_id = proj.id
            user.roles = [role]
            user.enabled = True
        s.flush()
        return user.id


def bootstrap(store: Store, admin_password: str) -> tuple[str, str]:
    """Project `admin` and user `admin` with role admin; safe to run again."""
    project_id = create_project(store, "admin", "bootstrap project", exist_ok=True)
    user_id = create_user(store, "admin", admin_password, project_id, "admin", exist_ok=True)
    return project_id, user_id


# ---- the catalog ----------------------------------------------------------------------------


def catalog_urls(call: Call) -> dict[str, str]:
    """Every endpoint where its service really listens (Settings come from the effective
    options: bind_host/bind_port, metadata_listen/metadata_listen_port)."""
    base = (call.settings.public_url or call.base_url).rstrip("/")
    metadata = call.settings.metadata_url
    if not metadata:
        host = urlsplit(base).hostname or "127.0.0.1"
        port = call.settings.metadata_port
        metadata = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    return {
        "identity": f"{base}/v3",
        "network": base,
        "compute": f"{base}/v2.1",
        "image": f"{base}/image",
        "metadata": metadata,
    }


_SERVICE_NAMES = {"identity": "keystone", "network": "neutron", "compute": "nova",
                  "image": "glance", "metadata": "nova_metadata"}


def _v3_catalog(call: Call) -> list[dict[str, Any]]:
    region = call.settings.region
    out = []
    for kind, url in catalog_urls(call).items():
        out.append({
            "type": kind,
            "name": _SERVICE_NAMES[kind],
            "id": kind,
            "endpoints": [
                {"id": f"{kind}-{iface}", "interface": iface, "region": region,
                 "region_id": region, "url": url}
                for iface in ("public", "internal", "admin")
            ],
        })
    return out


def _v2_catalog(call: Call) -> list[dict[str, Any]]:
    region = call.settings.region
    return [
        {"type": kind, "name": _SERVICE_NAMES[kind],
         "endpoints": [{"region": region, "publicURL": url, "internalURL": url,
                        "adminURL": url, "id": kind}],
         "endpoints_links": []}
        for kind, url in catalog_urls(call).items()
    ]


# ---- the token routes -------------------------------------------------------------------------


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _opt_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    return value


def post_v3_token(call: Call) -> Reply:
    """Keystone v3 password authentication, project scope (201 + X-Subject-Token)."""
    auth = _dig(call.body, "auth")
    if not isinstance(auth, dict):
        raise BadRequest('Expecting to find auth in request body: {"auth": {"identity": ...}}')
    methods = _dig(auth, "identity", "methods")
    if not isinstance(methods, list) or "password" not in methods:
        raise BadRequest("only the password authentication method is supported "
                         '(identity.methods = ["password"])')
    user = _dig(auth, "identity", "password", "user")
    if not isinstance(user, dict):
        raise BadRequest("identity.password.user is required")
    name = _opt_str(user.get("name"), "user name")
    uid = _opt_str(user.get("id"), "user id")
    password = _opt_str(user.get("password"), "password")
    if not (name or uid) or password is None:
        raise BadRequest("identity.password.user needs a name (or id) and a password")
    project = _dig(auth, "scope", "project")
    if project is not None and not isinstance(project, dict):
        raise BadRequest("scope.project must be an object with a name or id")
    pname = _opt_str(project.get("name"), "project name") if project else None
    pid = _opt_str(project.get("id"), "project id") if project else None
    issued = issue_token(call.store, name or "", password, project_name=pname, project_id=pid,
                         user_id=uid, ttl=call.settings.token_expiration)
    body = token_body(call, issued.context, issued.issued_at, issued.expires_at)
    return Reply(201, body, {"X-Subject-Token": issued.token})


def token_body(call: Call, ctx: RequestContext, issued_at: datetime, expires_at: datetime, *,
               catalog: bool = True) -> dict[str, Any]:
    """A Keystone v3 token document (issue and validation answer with it)."""
    token: dict[str, Any] = {
        "methods": ["password"],
        "expires_at": iso(expires_at),
        "issued_at": iso(issued_at),
        "audit_ids": [],
        "user": {"id": ctx.user_id, "name": ctx.user_name, "domain": DOMAIN,
                 "password_expires_at": None},
        "project": {"id": ctx.project_id, "name": ctx.project_name, "domain": DOMAIN},
        "is_domain": False,
        "roles": [{"id": r, "name": r} for r in ctx.roles],
    }
    if catalog:
        token["catalog"] = _v3_catalog(call)
    return {"token": token}


def post_v2_token(call: Call) -> Reply:
    """Legacy Keystone v2.0 (passwordCredentials + tenantName), as the seed's agents use."""
    auth = _dig(call.body, "auth")
    creds = _dig(auth, "passwordCredentials")
    if not isinstance(creds, dict):
        raise BadRequest('Expecting {"auth": {"passwordCredentials": {"username", "password"}, '
                         '"tenantName": ...}}')
    username = _opt_str(creds.get("username"), "username")
    password = _opt_str(creds.get("password"), "password")
    if not username or password is None:
        raise BadRequest("passwordCredentials needs a username and a password")
    tenant_name = _opt_str(auth.get("tenantName"), "tenantName")
    tenant_id = _opt_str(auth.get("tenantId"), "tenantId")
    issued = issue_token(call.store, username, password, project_name=tenant_name,
                         project_id=tenant_id, ttl=call.settings.token_expiration)
    ctx = issued.context
    tenant = {"id": ctx.project_id, "name": ctx.project_name, "enabled": True,
              "description": ""}
    body = {"access": {
        "token": {"id": issued.token, "issued_at": iso(issued.issued_at),
                  "expires": iso(issued.expires_at), "tenant": tenant},
        "user": {"id": ctx.user_id, "name": ctx.user_name, "username": ctx.user_name,
                 "roles": [{"name": r} for r in ctx.roles], "roles_links": []},
        "serviceCatalog": _v2_catalog(call),
        "metadata": {"is_admin": int(ctx.is_admin), "roles": list(ctx.roles)},
    }}
    return Reply(200, body)
