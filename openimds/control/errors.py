"""API errors and their wire shapes, translated at one edge (the app's error middleware).

    ApiError                      status  Neutron type (default)     Nova key
    ├── BadRequest                 400    HTTPBadRequest             badRequest
    ├── Unauthorized               401    HTTPUnauthorized           unauthorized
    ├── Forbidden                  403    HTTPForbidden              forbidden
    ├── NotFound                   404    HTTPNotFound               itemNotFound
    ├── MethodNotAllowed           405    HTTPMethodNotAllowed       badMethod
    ├── Conflict                   409    HTTPConflict               conflictingRequest
    ├── Gone                       410    HTTPGone                   gone
    ├── PayloadTooLarge            413    HTTPRequestEntityTooLarge  requestEntityTooLarge
    └── ServiceUnavailable         503    HTTPServiceUnavailable     serviceUnavailable

Handlers raise these (or let inventory errors escape: `from_inventory` maps each inventory family
to its status). `error_body` renders one for the API family the request went to:

* Neutron (`/v2.0/...`): ``{"NeutronError": {"type", "message", "detail"}}``
* Nova (`/v2.1/...`): ``{"badRequest": {"code", "message"}}`` (key per status)
* Keystone (`/v3/...`, `/v2.0/tokens`): ``{"error": {"code", "title", "message"}}``
"""

from __future__ import annotations

from typing import Any, Literal

from openimds.inventory import errors as inv

Flavor = Literal["neutron", "nova", "keystone"]


class ApiError(Exception):
    status = 500
    neutron_type = "HTTPInternalServerError"
    nova_key = "computeFault"
    title = "Internal Server Error"

    def __init__(self, message: str, *, type: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.type = type or self.neutron_type
        self.detail = detail


class BadRequest(ApiError):
    status = 400
    neutron_type = "HTTPBadRequest"
    nova_key = "badRequest"
    title = "Bad Request"


class Unauthorized(ApiError):
    status = 401
    neutron_type = "HTTPUnauthorized"
    nova_key = "unauthorized"
    title = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    neutron_type = "HTTPForbidden"
    nova_key = "forbidden"
    title = "Forbidden"


class NotFound(ApiError):
    status = 404
    neutron_type = "HTTPNotFound"
    nova_key = "itemNotFound"
    title = "Not Found"


class MethodNotAllowed(ApiError):
    status = 405
    neutron_type = "HTTPMethodNotAllowed"
    nova_key = "badMethod"
    title = "Method Not Allowed"


class Conflict(ApiError):
    status = 409
    neutron_type = "HTTPConflict"
    nova_key = "conflictingRequest"
    title = "Conflict"


class Gone(ApiError):
    status = 410
    neutron_type = "HTTPGone"
    nova_key = "gone"
    title = "Gone"


class PayloadTooLarge(ApiError):
    status = 413
    neutron_type = "HTTPRequestEntityTooLarge"
    nova_key = "requestEntityTooLarge"
    title = "Request Entity Too Large"


class ServiceUnavailable(ApiError):
    status = 503
    neutron_type = "HTTPServiceUnavailable"
    nova_key = "serviceUnavailable"
    title = "Service Unavailable"


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        Gone,
        PayloadTooLarge,
        ServiceUnavailable,
    )
}


def for_status(status: int, message: str) -> ApiError:
    """An ApiError for an HTTP status raised below us (aiohttp's 404/405/413...)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        err = ApiError(message)
        err.status = status if 400 <= status < 600 else 500
        return err
    return cls(message)


def from_inventory(exc: inv.InventoryError) -> ApiError:
    """Map one inventory error family to its API error (see inventory/errors.py)."""
    if isinstance(exc, inv.NotFound):
        return NotFound(exc.message)
    if isinstance(exc, inv.ChangesPruned):
        return Gone(exc.message, type="ChangesPruned")
    if isinstance(exc, inv.InvalidValue):
        return BadRequest(exc.message, type="InvalidInput")
    if isinstance(exc, inv.IpAddressInUse):
        return Conflict(exc.message, type="IpAddressInUse")
    if isinstance(exc, inv.MacAddressInUse):
        return Conflict(exc.message, type="MacAddressInUse")
    if isinstance(exc, inv.SubnetOverlap):
        return Conflict(exc.message, type="OverlappingSubnet")
    if isinstance(exc, inv.InUse):
        return Conflict(exc.message, type="InUse")
    if isinstance(exc, inv.Conflict):
        return Conflict(exc.message)
    if isinstance(exc, inv.StoreUnavailable):
        return ServiceUnavailable(exc.message)
    return ApiError("internal error")


def flavor_for_path(path: str) -> Flavor:
    if path.startswith("/v2.1"):
        return "nova"
    if path.startswith("/v3") or path.rstrip("/") == "/v2.0/tokens":
        return "keystone"
    return "neutron"


def error_body(err: ApiError, flavor: Flavor) -> dict[str, Any]:
    if flavor == "nova":
        return {err.nova_key: {"code": err.status, "message": err.message}}
    if flavor == "keystone":
        return {"error": {"code": err.status, "title": err.title, "message": err.message}}
    return {"NeutronError": {"type": err.type, "message": err.message, "detail": err.detail}}
