"""Every way a metadata request can fail, as closed types mapped to HTTP at one edge.

    MetadataError (status, explanation)
    ├── BadRequest (400)
    │   ├── MissingHeader          an identity header is absent
    │   ├── DuplicateHeader        an identity header was sent more than once
    │   ├── InvalidHeader          an identity header's bytes are not UTF-8 text
    │   ├── ProviderLookupFailed   provider mode could not map (provider, address) to one port
    │   ├── PasswordMethod         password with a method other than GET/POST
    │   ├── PasswordTooLarge       password POST over 1020 bytes
    │   ├── PasswordInvalid        password POST that is not UTF-8, or instance vanished
    │   └── BadTokenTtl            token PUT without a TTL header in 1..21600
    ├── Unauthorized (401)
    │   ├── TokenRequired          no session token, and the instance requires one
    │   └── InvalidToken           a token that is malformed, expired or another instance's
    ├── Forbidden (403)
    │   ├── BadSignature           X-Instance-ID-Signature / X-Metadata-Provider-Signature wrong
    │   ├── EndpointDisabled       the instance's http_endpoint is disabled
    │   │   └── Ipv6Disabled       a request over IPv6 with http_protocol_ipv6 disabled
    │   └── TokenForwarded         token PUT that came with an X-Forwarded-For (SSRF rule)
    ├── NotFound (404)
    │   ├── InstanceNotFound       nobody known is asking (or tenant mismatch, or ambiguous IP)
    │   └── PathNotFound           no such version, key or file for this instance
    ├── MethodNotAllowed (405)     the token path with a method other than PUT
    ├── Conflict (409)
    │   └── PasswordAlreadySet
    ├── InternalError (500)        the caller's address is unknown, or something unforeseen
    │   └── UpstreamFailed         a fatal DynamicJSON vendordata target failed
    └── Unavailable (503)          the inventory cannot be read now and nothing is cached:
                                   try again after `retry_after` seconds (Retry-After)

The explanation is what nova sends (byte-compatible where the spec pins it) and otherwise says
what to send instead. `error_body` renders the webob-style body negotiated on `Accept`.
"""

from __future__ import annotations

import json

__all__ = [
    "BadRequest",
    "BadSignature",
    "BadTokenTtl",
    "EndpointDisabled",
    "InvalidToken",
    "Ipv6Disabled",
    "MethodNotAllowed",
    "TokenForwarded",
    "TokenRequired",
    "Unauthorized",
    "Conflict",
    "DuplicateHeader",
    "Forbidden",
    "InstanceNotFound",
    "InternalError",
    "InvalidHeader",
    "MetadataError",
    "MissingHeader",
    "NotFound",
    "PasswordAlreadySet",
    "PasswordInvalid",
    "PasswordMethod",
    "PasswordTooLarge",
    "PathNotFound",
    "ProviderLookupFailed",
    "Unavailable",
    "UpstreamFailed",
    "error_body",
]

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class MetadataError(Exception):
    status: int = 500
    default_explanation = "An unknown error has occurred. Please try your request again."

    def __init__(self, explanation: str | None = None, *, log_detail: str | None = None) -> None:
        self.explanation = explanation or self.default_explanation
        # Said in the server log only (never to the guest): why, for the operator.
        self.log_detail = log_detail
        # Set once the caller is identified, so the access log can name the instance.
        self.instance_id: str | None = None
        super().__init__(self.explanation)

    @property
    def title(self) -> str:
        return _TITLES[self.status]


class BadRequest(MetadataError):
    status = 400
    default_explanation = "The server could not comply with the request since it is either malformed or otherwise incorrect."


class MissingHeader(BadRequest):
    def __init__(self, header: str, explanation: str | None = None) -> None:
        self.header = header
        super().__init__(explanation or f"{header} header is missing from request.")


class DuplicateHeader(BadRequest):
    def __init__(self, header: str) -> None:
        self.header = header
        super().__init__(f"Multiple {header} headers found within request.")


class InvalidHeader(BadRequest):
    def __init__(self, header: str) -> None:
        self.header = header
        super().__init__(f"{header} header is not valid UTF-8 text.")


class ProviderLookupFailed(BadRequest):
    pass


class PasswordMethod(BadRequest):
    default_explanation = "GET and POST only are supported."


class PasswordTooLarge(BadRequest):
    default_explanation = "Request is too large."


class PasswordInvalid(BadRequest):
    default_explanation = "The password must be UTF-8 text."


class BadTokenTtl(BadRequest):
    default_explanation = (
        "PUT /latest/api/token needs the header X-aws-ec2-metadata-token-ttl-seconds with a "
        "whole number of seconds from 1 to 21600."
    )


class Unauthorized(MetadataError):
    status = 401
    default_explanation = "A valid session token is required."


class TokenRequired(Unauthorized):
    default_explanation = (
        "This instance requires a session token: get one with PUT /latest/api/token "
        "(header X-aws-ec2-metadata-token-ttl-seconds: 1..21600) and send it as "
        "X-aws-ec2-metadata-token."
    )


class InvalidToken(Unauthorized):
    default_explanation = (
        "The session token is invalid or expired: get a new one with PUT /latest/api/token."
    )


class Forbidden(MetadataError):
    status = 403
    default_explanation = "Access was denied to this resource."


class BadSignature(Forbidden):
    default_explanation = "Invalid proxy request signature."


class EndpointDisabled(Forbidden):
    default_explanation = "The metadata endpoint is disabled for this instance."


class Ipv6Disabled(EndpointDisabled):
    default_explanation = "The IPv6 metadata endpoint is disabled for this instance."


class TokenForwarded(Forbidden):
    default_explanation = (
        "A session token cannot be requested through a proxy (the request carried "
        "X-Forwarded-For)."
    )


class NotFound(MetadataError):
    status = 404
    default_explanation = "The resource could not be found."


class InstanceNotFound(NotFound):
    pass


class PathNotFound(NotFound):
    pass


class MethodNotAllowed(MetadataError):
    status = 405
    default_explanation = "The token is issued by PUT /latest/api/token only."


class Conflict(MetadataError):
    status = 409
    default_explanation = "There was a conflict when trying to complete your request."


class PasswordAlreadySet(Conflict):
    pass


class InternalError(MetadataError):
    status = 500


class UpstreamFailed(InternalError):
    # 500 as in nova (and as the option's help says): no 4xx fits a failure on our side.
    default_explanation = "A vendordata service failed; try again later."


class Unavailable(MetadataError):
    """The inventory cannot be read right now and this answer is not cached."""

    status = 503
    default_explanation = (
        "The metadata service cannot reach its inventory right now; please try again shortly."
    )

    def __init__(
        self, explanation: str | None = None, *, log_detail: str | None = None,
        retry_after: int = 5
    ) -> None:
        super().__init__(explanation, log_detail=log_detail)
        self.retry_after = retry_after


def _accept_quality(accept: str, offer: str) -> float:
    """q of the most specific media range in `accept` matching `offer` (0 when none does)."""
    otype, osub = offer.split("/")
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if "/" not in media:
            continue
        mtype, msub = media.split("/", 1)
        q = 1.0
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if mtype == "*" and msub == "*":
            specificity = 0
        elif mtype == otype and msub == "*":
            specificity = 1
        elif mtype == otype and msub == osub:
            specificity = 2
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q)
    return best[1]


def error_body(status: int, explanation: str, accept: str | None) -> tuple[str, bytes]:
    """(content type, body) of a webob-style error page, negotiated on `Accept` (spec 13.2).

    webob offers text/html then application/json; anything else (or no Accept) gets plain text.
    """
    title = _TITLES.get(status, "Error")
    status_line = f"{status} {title}"
    kind = "plain"
    if accept:
        html_q = _accept_quality(accept, "text/html")
        json_q = _accept_quality(accept, "application/json")
        if html_q > 0 and html_q >= json_q:
            kind = "html"
        elif json_q > 0:
            kind = "json"
    if kind == "html":
        body = (
            f"<html>\n <head>\n  <title>{status_line}</title>\n </head>\n <body>\n"
            f"  <h1>{status_line}</h1>\n  {explanation}<br /><br />\n\n\n\n </body>\n</html>"
        )
        return "text/html; charset=UTF-8", body.encode()
    if kind == "json":
        doc = {"message": f"{explanation}<br /><br />\n\n\n", "code": status_line, "title": title}
        return "application/json", json.dumps(doc).encode()
    return "text/plain; charset=UTF-8", f"{status_line}\n\n{explanation}\n\n   ".encode()
