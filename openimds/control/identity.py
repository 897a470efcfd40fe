"""Identity administration over REST, in Keystone v3 shapes: projects, users, roles, role
assignments, the one domain (`Default`), and token validation/revocation.

Rules:
* Writes (create, update, delete, grant, revoke) are for admins only (403 otherwise).
* A non-admin sees the projects it holds a role on and its own user; the rest is 404.
* Roles are the fixed set of context.ROLES (admin, member, reader, service); a role's id is
  its name. A user's roles on its default project (set by `openimds user create --role`) and
  its role assignments are one set: both are listed as assignments, and revoking removes it
  from both.
* Revoking a role, disabling or deleting a user or project revokes the affected tokens
  (tokens carry a snapshot of their roles, so they must not outlive the grant).
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openimds.control import auth
from openimds.control.call import Call, Reply, get_bool, get_str, resource_body
from openimds.control.context import ROLES
from openimds.control.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from openimds.control.passwords import hash_password
from openimds.inventory.models import Project, RoleAssignment, Token, User

DOMAIN_ID = "default"
_ROLE_DESCRIPTIONS = {
    "admin": "Reads and writes every project's resources; administers identity.",
    "member": "Reads and writes its project's resources.",
    "reader": "Reads its project's resources.",
    "service": "Reads every project's resources and the change feed (agents).",
}


def _base(call: Call) -> str:
    return call.base_url.rstrip("/") + "/v3"


def _links(call: Call, path: str) -> dict[str, Any]:
    return {"self": f"{_base(call)}/{path}"}


def _list_links(call: Call, path: str) -> dict[str, Any]:
    return {"self": f"{_base(call)}/{path}", "previous": None, "next": None}


def project_dict(call: Call, p: Project) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "description": p.description or "",
            "domain_id": DOMAIN_ID, "parent_id": DOMAIN_ID, "enabled": p.enabled,
            "is_domain": False, "tags": [], "options": {},
            "links": _links(call, f"projects/{p.id}")}


def user_dict(call: Call, u: User) -> dict[str, Any]:
    return {"id": u.id, "name": u.name, "domain_id": DOMAIN_ID, "enabled": u.enabled,
            "default_project_id": u.project_id, "password_expires_at": None, "options": {},
            "links": _links(call, f"users/{u.id}")}


def role_dict(call: Call, role: str) -> dict[str, Any]:
    return {"id": role, "name": role, "domain_id": None,
            "description": _ROLE_DESCRIPTIONS[role], "options": {},
            "links": _links(call, f"roles/{role}")}


def domain_dict(call: Call) -> dict[str, Any]:
    return {"id": DOMAIN_ID, "name": "Default", "description": "The default domain",
            "enabled": True, "tags": [], "options": {},
            "links": _links(call, f"domains/{DOMAIN_ID}")}


def _admin(call: Call, action: str) -> None:
    if not call.context.is_admin:
        raise Forbidden(f"You are not authorized to perform the requested action: {action}.")


def _my_project_ids(s: Session, call: Call) -> set[str]:
    ctx = call.context
    user = s.get(User, ctx.user_id)
    ids = {ctx.project_id}
    if user is not None:
        if user.project_id and user.roles:
            ids.add(user.project_id)
        ids.update(s.scalars(select(RoleAssignment.project_id).where(
            RoleAssignment.user_id == user.id)))
    return ids


def _project(s: Session, call: Call, pid: str, *, write: bool = False) -> Project:
    project = s.get(Project, pid)
    visible = project is not None and (call.context.is_admin or (
        not write and project.id in _my_project_ids(s, call)))
    if not visible:
        raise NotFound(f"Could not find project: {pid}.")
    assert project is not None
    return project


def _user(s: Session, call: Call, uid: str) -> User:
    user = s.get(User, uid)
    if user is None or not (call.context.is_admin or user.id == call.context.user_id):
        raise NotFound(f"Could not find user: {uid}.")
    return user


def _role(rid: str) -> str:
    if rid not in ROLES:
        raise NotFound(f"Could not find role: {rid}.")
    return rid


def _domain_ok(obj: dict[str, Any]) -> None:
    domain = obj.get("domain_id", DOMAIN_ID)
    if domain not in (DOMAIN_ID, None):
        raise BadRequest(f"Only the Default domain exists (domain_id {DOMAIN_ID!r}).")


def _revoke(s: Session, *, user_id: str | None = None, project_id: str | None = None) -> None:
    stmt = delete(Token)
    if user_id is not None:
        stmt = stmt.where(Token.user_id == user_id)
    if project_id is not None:
        stmt = stmt.where(Token.project_id == project_id)
    s.execute(stmt)


def _filter_enabled(call: Call) -> bool | None:
    raw = call.query_one("enabled")
    if raw is None:
        return None
    return raw.lower() not in ("false", "0", "no")


# ---- projects ---------------------------------------------------------------------------------


def list_projects(call: Call) -> Reply:
    stmt = select(Project).order_by(Project.name)
    name = call.query_one("name")
    if name is not None:
        stmt = stmt.where(Project.name == name)
    enabled = _filter_enabled(call)
    if enabled is not None:
        stmt = stmt.where(Project.enabled.is_(enabled))
    domain = call.query_one("domain_id")
    with call.store.read() as s:
        if not call.context.is_admin:
            stmt = stmt.where(Project.id.in_(_my_project_ids(s, call)))
        rows = [] if domain not in (None, DOMAIN_ID) else list(s.scalars(stmt))
        return Reply(200, {"projects": [project_dict(call, p) for p in rows],
                           "links": _list_links(call, "projects")})


def list_my_projects(call: Call) -> Reply:
    """`GET /v3/auth/projects` and `/v3/users/{id}/projects`: projects the user holds a role
    on."""
    uid = call.params.get("id", call.context.user_id)
    with call.store.read() as s:
        user = _user(s, call, uid)
        ids = {a for a in s.scalars(select(RoleAssignment.project_id).where(
            RoleAssignment.user_id == user.id))}
        if user.project_id and user.roles:
            ids.add(user.project_id)
        rows = s.scalars(select(Project).where(Project.id.in_(ids), Project.enabled.is_(True))
                         .order_by(Project.name))
        return Reply(200, {"projects": [project_dict(call, p) for p in rows],
                           "links": _list_links(call, "auth/projects")})


def show_project(call: Call) -> Reply:
    with call.store.read() as s:
        return Reply(200, {"project": project_dict(call, _project(s, call, call.params["id"]))})


PROJECT_FIELDS = ("name", "description", "domain_id", "enabled", "parent_id", "is_domain",
                  "tags", "options")


def create_project(call: Call) -> Reply:
    _admin(call, "identity:create_project")
    obj = resource_body(call.body, "project", PROJECT_FIELDS, required=("name",))
    _domain_ok(obj)
    if obj.get("is_domain"):
        raise BadRequest("Only the Default domain exists; projects cannot be domains.")
    if obj.get("parent_id") not in (None, DOMAIN_ID):
        raise BadRequest("Projects have no hierarchy here: parent_id must be the domain.")
    name = get_str(obj, "name", max_len=64).strip()
    if not name:
        raise BadRequest("Invalid input for field 'name': must not be empty.")
    with call.store.session() as s:
        if s.scalars(select(Project).where(Project.name == name)).first() is not None:
            raise Conflict(f"Conflict occurred attempting to store project - it is not "
                           f"permitted to have two projects with the same name in the same "
                           f"domain : {name}.")
        project = Project(name=name, description=get_str(obj, "description", nullable=True,
                                                          max_len=65535),
                          enabled=get_bool(obj, "enabled", True))
        s.add(project)
        s.flush()
        return Reply(201, {"project": project_dict(call, project)})


def update_project(call: Call) -> Reply:
    _admin(call, "identity:update_project")
    obj = resource_body(call.body, "project", PROJECT_FIELDS)
    _domain_ok(obj)
    with call.store.session() as s:
        project = _project(s, call, call.params["id"], write=True)
        if "name" in obj:
            name = get_str(obj, "name", max_len=64).strip()
            if not name:
                raise BadRequest("Invalid input for field 'name': must not be empty.")
            clash = s.scalars(select(Project).where(Project.name == name,
                                                    Project.id != project.id)).first()
            if clash is not None:
                raise Conflict(f"A project named {name!r} already exists.")
            project.name = name
        if "description" in obj:
            project.description = get_str(obj, "description", nullable=True, max_len=65535)
        if "enabled" in obj:
            project.enabled = get_bool(obj, "enabled", True)
            if not project.enabled:
                _revoke(s, project_id=project.id)
        s.flush()
        return Reply(200, {"project": project_dict(call, project)})


def delete_project(call: Call) -> Reply:
    _admin(call, "identity:delete_project")
    with call.store.session() as s:
        project = _project(s, call, call.params["id"], write=True)
        if project.id == call.context.project_id:
            raise Conflict("The project of the token you are using cannot be deleted.")
        users = s.scalars(select(User.name).where(User.project_id == project.id)).all()
        if users:
            raise Conflict(f"Project {project.id} is the default project of user(s) "
                           f"{', '.join(users[:5])}; change or delete them first.")
        _revoke(s, project_id=project.id)
        s.delete(project)  # resources it still owns make this a 409 (inventory InUse)
    return Reply(204)


# ---- users ------------------------------------------------------------------------------------

USER_FIELDS = ("name", "password", "default_project_id", "domain_id", "enabled", "email",
               "description", "options")


def list_users(call: Call) -> Reply:
    stmt = select(User).order_by(User.name)
    name = call.query_one("name")
    if name is not None:
        stmt = stmt.where(User.name == name)
    enabled = _filter_enabled(call)
    if enabled is not None:
        stmt = stmt.where(User.enabled.is_(enabled))
    if not call.context.is_admin:
        stmt = stmt.where(User.id == call.context.user_id)
    domain = call.query_one("domain_id")
    with call.store.read() as s:
        rows = [] if domain not in (None, DOMAIN_ID) else list(s.scalars(stmt))
        return Reply(200, {"users": [user_dict(call, u) for u in rows],
                           "links": _list_links(call, "users")})


def show_user(call: Call) -> Reply:
    with call.store.read() as s:
        return Reply(200, {"user": user_dict(call, _user(s, call, call.params["id"]))})


def _default_project(s: Session, obj: dict[str, Any]) -> str | None:
    pid = obj.get("default_project_id")
    if pid is None:
        return None
    if not isinstance(pid, str) or s.get(Project, pid) is None:
        raise BadRequest(f"Invalid default_project_id: project {pid!r} does not exist.")
    return pid


def create_user(call: Call) -> Reply:
    _admin(call, "identity:create_user")
    obj = resource_body(call.body, "user", USER_FIELDS, required=("name",))
    _domain_ok(obj)
    name = get_str(obj, "name").strip()
    if not name:
        raise BadRequest("Invalid input for field 'name': must not be empty.")
    password = get_str(obj, "password", nullable=True, max_len=4096)
    with call.store.session() as s:
        if s.scalars(select(User).where(User.name == name)).first() is not None:
            raise Conflict(f"Conflict occurred attempting to store user - Duplicate entry "
                           f"found with name {name} at domain ID {DOMAIN_ID}.")
        # Without a password the user can never authenticate: store a hash of random bytes.
        user = User(name=name, project_id=_default_project(s, obj),
                    password_hash=hash_password(password or secrets.token_urlsafe(32)),
                    roles=[], enabled=get_bool(obj, "enabled", True))
        s.add(user)
        s.flush()
        return Reply(201, {"user": user_dict(call, user)})


def update_user(call: Call) -> Reply:
    obj = resource_body(call.body, "user", USER_FIELDS)
    _admin(call, "identity:update_user")
    _domain_ok(obj)
    with call.store.session() as s:
        user = _user(s, call, call.params["id"])
        if "name" in obj:
            name = get_str(obj, "name").strip()
            if not name:
                raise BadRequest("Invalid input for field 'name': must not be empty.")
            clash = s.scalars(select(User).where(User.name == name, User.id != user.id)).first()
            if clash is not None:
                raise Conflict(f"A user named {name!r} already exists.")
            user.name = name
        if "password" in obj:
            user.password_hash = hash_password(get_str(obj, "password", max_len=4096))
            _revoke(s, user_id=user.id)
        if "default_project_id" in obj and obj["default_project_id"] != user.project_id:
            # The roles held on the old default project stay with it as assignments.
            if user.project_id:
                for role in user.roles or []:
                    _grant(s, user.id, user.project_id, role)
            user.project_id = _default_project(s, obj)
            user.roles = []
        if "enabled" in obj:
            user.enabled = get_bool(obj, "enabled", True)
            if not user.enabled:
                _revoke(s, user_id=user.id)
        s.flush()
        return Reply(200, {"user": user_dict(call, user)})


def delete_user(call: Call) -> Reply:
    _admin(call, "identity:delete_user")
    with call.store.session() as s:
        user = _user(s, call, call.params["id"])
        if user.id == call.context.user_id:
            raise Conflict("You cannot delete the user of the token you are using.")
        s.delete(user)  # tokens, key pairs and role assignments cascade
    return Reply(204)


# ---- roles, domains ---------------------------------------------------------------------------


def list_roles(call: Call) -> Reply:
    name = call.query_one("name")
    roles = [r for r in ROLES if name is None or r == name]
    return Reply(200, {"roles": [role_dict(call, r) for r in roles],
                       "links": _list_links(call, "roles")})


def show_role(call: Call) -> Reply:
    return Reply(200, {"role": role_dict(call, _role(call.params["id"]))})


def list_domains(call: Call) -> Reply:
    name = call.query_one("name")
    found = name is None or name == "Default"
    return Reply(200, {"domains": [domain_dict(call)] if found else [],
                       "links": _list_links(call, "domains")})


def show_domain(call: Call) -> Reply:
    if call.params["id"] != DOMAIN_ID:
        raise NotFound(f"Could not find domain: {call.params['id']}.")
    return Reply(200, {"domain": domain_dict(call)})


# ---- role assignments -------------------------------------------------------------------------


def _grant(s: Session, user_id: str, project_id: str, role: str) -> None:
    if s.get(RoleAssignment, (user_id, project_id, role)) is None:
        s.add(RoleAssignment(user_id=user_id, project_id=project_id, role=role))


def _assignment_target(s: Session, call: Call) -> tuple[Project, User, str]:
    project = _project(s, call, call.params["project_id"])
    user = s.get(User, call.params["user_id"])
    if user is None or not (call.context.is_admin or user.id == call.context.user_id):
        raise NotFound(f"Could not find user: {call.params['user_id']}.")
    return project, user, _role(call.params["role_id"])


def grant_role(call: Call) -> Reply:
    _admin(call, "identity:create_grant")
    with call.store.session() as s:
        project, user, role = _assignment_target(s, call)
        if role not in auth.roles_on(s, user, project.id):
            _grant(s, user.id, project.id, role)
    return Reply(204)


def check_role(call: Call) -> Reply:
    with call.store.read() as s:
        project, user, role = _assignment_target(s, call)
        if role not in auth.roles_on(s, user, project.id):
            raise NotFound(f"Could not find role assignment with role: {role}, user or "
                           f"group: {user.id}, project, domain, or system: {project.id}.")
    return Reply(204)


def revoke_role(call: Call) -> Reply:
    _admin(call, "identity:revoke_grant")
    with call.store.session() as s:
        project, user, role = _assignment_target(s, call)
        if role not in auth.roles_on(s, user, project.id):
            raise NotFound(f"Could not find role assignment with role: {role}, user or "
                           f"group: {user.id}, project, domain, or system: {project.id}.")
        s.execute(delete(RoleAssignment).where(RoleAssignment.user_id == user.id,
                                               RoleAssignment.project_id == project.id,
                                               RoleAssignment.role == role))
        if user.project_id == project.id and role in (user.roles or []):
            user.roles = [r for r in user.roles if r != role]
        _revoke(s, user_id=user.id, project_id=project.id)
    return Reply(204)


def list_user_project_roles(call: Call) -> Reply:
    with call.store.read() as s:
        project = _project(s, call, call.params["project_id"])
        user = s.get(User, call.params["user_id"])
        if user is None or not (call.context.is_admin or user.id == call.context.user_id):
            raise NotFound(f"Could not find user: {call.params['user_id']}.")
        roles = auth.roles_on(s, user, project.id)
    return Reply(200, {"roles": [role_dict(call, r) for r in roles],
                       "links": _list_links(call, "roles")})


def list_role_assignments(call: Call) -> Reply:
    """`GET /v3/role_assignments` with the filters the clients send (`user.id`,
    `scope.project.id`, `role.id`; `effective` and `include_names` accepted)."""
    user_id = call.query_one("user.id")
    project_id = call.query_one("scope.project.id")
    role_id = call.query_one("role.id")
    names = call.query_one("include_names") is not None
    ctx = call.context
    with call.store.read() as s:
        stmt = select(User)
        if user_id is not None:
            stmt = stmt.where(User.id == user_id)
        if not ctx.is_admin:
            stmt = stmt.where(User.id == ctx.user_id)
        users = {u.id: u for u in s.scalars(stmt)}
        pairs: set[tuple[str, str, str]] = set()
        for u in users.values():
            if u.project_id:
                pairs.update((u.id, u.project_id, r) for r in u.roles or [])
        assignments = select(RoleAssignment).where(RoleAssignment.user_id.in_(list(users)))
        pairs.update((a.user_id, a.project_id, a.role) for a in s.scalars(assignments))
        projects = {p.id: p for p in s.scalars(select(Project).where(
            Project.id.in_({p for _, p, _ in pairs})))}
        out = []
        for uid, pid, role in sorted(pairs):
            if (project_id and pid != project_id) or (role_id and role != role_id) or (
                    role not in ROLES):
                continue
            user_ref: dict[str, Any] = {"id": uid}
            project_ref: dict[str, Any] = {"id": pid}
            role_ref: dict[str, Any] = {"id": role}
            if names:
                user_ref.update(name=users[uid].name, domain={"id": DOMAIN_ID,
                                                               "name": "Default"})
                if pid in projects:
                    project_ref.update(name=projects[pid].name,
                                       domain={"id": DOMAIN_ID, "name": "Default"})
                role_ref["name"] = role
            out.append({"user": user_ref, "scope": {"project": project_ref}, "role": role_ref,
                        "links": {"assignment": f"{_base(call)}/projects/{pid}/users/{uid}/"
                                                f"roles/{role}"}})
    return Reply(200, {"role_assignments": out, "links": _list_links(call,
                                                                     "role_assignments")})


# ---- token validation and revocation ---------------------------------------------------------


def _subject(call: Call) -> str:
    subject = call.headers.get("X-Subject-Token")
    if not subject:
        raise BadRequest("Send the token to check in the X-Subject-Token header.")
    return subject


def validate_subject_token(call: Call) -> Reply:
    """`GET /v3/auth/tokens`: the subject token's body (admins and services may check any
    token, everyone their own); 404 when it is invalid or expired."""
    subject = _subject(call)
    ctx = call.context
    try:
        sub = auth.validate_token(call.store, subject)
    except Unauthorized:
        raise NotFound("The token is invalid or has expired.") from None
    if not (ctx.reads_all or sub.user_id == ctx.user_id):
        raise Forbidden("You are not authorized to validate another user's token.")
    with call.store.read() as s:
        row = s.get(Token, auth.token_hash(subject))
        if row is None:
            raise NotFound("The token is invalid or has expired.")
        issued, expires = row.issued_at, row.expires_at
    body = auth.token_body(call, sub, issued, expires,
                           catalog=call.query_one("nocatalog") is None)
    return Reply(200, body, {"X-Subject-Token": subject})


def revoke_subject_token(call: Call) -> Reply:
    """`DELETE /v3/auth/tokens`: revoke the subject token (admins any, users their own)."""
    subject = _subject(call)
    ctx = call.context
    with call.store.session() as s:
        row = s.get(Token, auth.token_hash(subject))
        if row is None:
            raise NotFound("The token is invalid or has expired.")
        if not (ctx.is_admin or row.user_id == ctx.user_id):
            raise Forbidden("You are not authorized to revoke another user's token.")
        s.delete(row)
    return Reply(204)


__all__ = [
    "check_role", "create_project", "create_user", "delete_project", "delete_user",
    "grant_role", "list_domains", "list_my_projects", "list_projects", "list_role_assignments",
    "list_roles", "list_user_project_roles", "list_users", "revoke_role",
    "revoke_subject_token", "show_domain", "show_project", "show_role", "show_user",
    "update_project", "update_user", "validate_subject_token",
]
