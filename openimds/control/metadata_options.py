"""Per-server metadata options and token usage (an openimds extension of `/v2.1/servers`).

    GET  /v2.1/servers/{id}/metadata-options     the effective options, the ones set on the
                                                 server, and its session-token usage counts
    PUT  /v2.1/servers/{id}/metadata-options     {"metadata_options": {name: value | null}}:
                                                 set (null = back to the cloud default)
    GET  /v2.1/os-metadata-token-usage           per server: tokenless and invalid-token
                                                 requests (which servers still use IMDSv1)
    GET  /v2.1/os-metadata-identity-certificate  the certificate that signs the identity
                                                 document ({"certificate": PEM})

Option names and values are AWS's `InstanceMetadataOptions` in snake case (metadata/options.py).
A change bumps the server's revision, so every metadata API replica applies it from the change
feed (no restart, no TTL).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from openimds.control.call import Call, Reply
from openimds.control.context import scoped
from openimds.control.errors import BadRequest, NotFound
from openimds.inventory.models import Instance, MetadataTokenUsage
from openimds.metadata.options import InvalidOptions, effective_options, validate_options

__all__ = [
    "CREATE_KEY",
    "identity_certificate",
    "list_token_usage",
    "options_for_create",
    "show_metadata_options",
    "update_metadata_options",
]

# The attribute of a server create body (and of server show) carrying the options.
CREATE_KEY = "openimds:metadata_options"


def options_for_create(value: Any) -> dict[str, Any] | None:
    """The options a create body sets (None when it sets none); 400 on a bad one."""
    if value is None:
        return None
    try:
        checked = validate_options(value)
    except InvalidOptions as exc:
        raise BadRequest(f"Invalid input for {CREATE_KEY}: {exc}") from None
    return {k: v for k, v in checked.items() if v is not None} or None


def _find(call: Call, s: Any, *, write: bool = False) -> Instance:
    server_id = call.params["id"]
    inst: Instance | None = s.scalars(
        scoped(select(Instance).where(Instance.uuid == server_id), Instance, call.context,
               write=write)
    ).first()
    if inst is None:
        raise NotFound(f"Instance {server_id} could not be found.")
    return inst


def _usage(row: MetadataTokenUsage | None) -> dict[str, Any]:
    return {
        "tokenless_requests": row.tokenless_requests if row else 0,
        "invalid_token_requests": row.invalid_token_requests if row else 0,
        "last_tokenless_at": row.last_tokenless_at.isoformat()
        if row and row.last_tokenless_at else None,
    }


def _document(call: Call, inst: Instance, usage: MetadataTokenUsage | None) -> dict[str, Any]:
    own = dict(inst.metadata_options or {})
    return {
        "metadata_options": effective_options(own, call.settings.metadata_defaults).as_dict(),
        "set": own,
        "token_usage": _usage(usage),
    }


def show_metadata_options(call: Call) -> Reply:
    with call.store.read() as s:
        inst = _find(call, s)
        usage = s.get(MetadataTokenUsage, inst.uuid)
        return Reply(200, _document(call, inst, usage))


def update_metadata_options(call: Call) -> Reply:
    body = call.body
    if not isinstance(body, dict) or set(body) != {"metadata_options"}:
        raise BadRequest('request body must be {"metadata_options": {"<option>": value or '
                         'null, ...}}')
    try:
        changes = validate_options(body["metadata_options"])
    except InvalidOptions as exc:
        raise BadRequest(str(exc)) from None
    with call.store.session() as s:
        inst = _find(call, s, write=True)
        merged = dict(inst.metadata_options or {})
        for name, value in changes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        # A new dict (not an in-place change) so SQLAlchemy sees the JSON column change.
        inst.metadata_options = merged or None
        s.flush()
        usage = s.get(MetadataTokenUsage, inst.uuid)
        return Reply(200, _document(call, inst, usage))


def list_token_usage(call: Call) -> Reply:
    stmt = scoped(select(Instance), Instance, call.context).order_by(Instance.created_at)
    with call.store.read() as s:
        instances = list(s.scalars(stmt))
        rows = {
            r.instance_uuid: r
            for r in s.scalars(select(MetadataTokenUsage).where(
                MetadataTokenUsage.instance_uuid.in_([i.uuid for i in instances])))
        } if instances else {}
        out = []
        for inst in instances:
            options = effective_options(inst.metadata_options or {},
                                        call.settings.metadata_defaults)
            out.append({"server_id": inst.uuid, "name": inst.name,
                        "http_tokens": options.http_tokens, **_usage(rows.get(inst.uuid))})
        return Reply(200, {"token_usage": out})


def identity_certificate(call: Call) -> Reply:
    path = call.settings.identity_cert_file
    if not path:
        raise NotFound("No identity certificate is configured ([metadata] identity_cert_file).")
    try:
        with open(path, encoding="ascii") as fh:
            pem = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise NotFound(f"The identity certificate cannot be read: {exc}") from None
    return Reply(200, {"certificate": pem})
