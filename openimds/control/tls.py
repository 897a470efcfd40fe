"""The one TLS context builder for every openimds HTTP client.

    client_ssl_context(insecure, cafile, certfile=None, keyfile=None) -> ssl.SSLContext

Used by the control-plane client (`auth_insecure`, `auth_ca_cert`) and by the metadata agent
towards the metadata API (`nova_metadata_insecure`, `auth_ca_cert`, `nova_client_cert`,
`nova_client_priv_key`). Neutron's rules (spec 1.7): verify against `cafile` when given, else
the system CAs, unless `insecure`; a client certificate is sent only when both `certfile` and
`keyfile` are set. It lives in `openimds.control` next to the client it serves; the agent
already depends on this package for the control-plane client.
"""

from __future__ import annotations

import ssl

__all__ = ["client_ssl_context"]


def client_ssl_context(insecure: bool, cafile: str | None, certfile: str | None = None,
                       keyfile: str | None = None) -> ssl.SSLContext:
    """A client-side context; `insecure` skips verification (and ignores `cafile`)."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=cafile or None)
    if certfile and keyfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx
