"""Who is calling, and what they may see: the request context and the project scoping rules.

Roles (one set per user, carried by the token):

* ``admin``   -- reads and writes every project's resources;
* ``service`` -- reads every project's resources and the change feed (the agents); writes only
  in its own project;
* ``member``  -- reads and writes its own project only. Another project's resources do not
  exist for it (404, never 403, so ids of other tenants do not leak).
* ``reader``  -- reads its own project only and writes nothing (403 on every write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, or_

ROLES = ("admin", "member", "reader", "service")

S = TypeVar("S", bound=Select[Any])


@dataclass(frozen=True)
class RequestContext:
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def read_only(self) -> bool:
        """Only the reader role: every write is refused."""
        return not set(self.roles) - {"reader"}

    @property
    def reads_all(self) -> bool:
        return self.is_admin or "service" in self.roles

    def sees_project(self, project_id: str, *, write: bool = False) -> bool:
        if self.is_admin or (not write and self.reads_all):
            return True
        return project_id == self.project_id


def scoped(stmt: S, model: Any, ctx: RequestContext, *, write: bool = False,
           shared: Any = None) -> S:
    """Restrict `stmt` to rows of `model` the caller may see (or change, with `write`).

    `shared` is an optional SQL expression that also makes a row readable (shared networks).
    """
    if ctx.is_admin or (not write and ctx.reads_all):
        return stmt
    own = model.project_id == ctx.project_id
    if shared is not None and not write:
        return stmt.where(or_(own, shared))
    return stmt.where(own)
