"""`openimds server set --metadata-...` and the same flags on `server create`; `server show`
with the effective metadata options; `openimds server token-usage`.

The flags spell AWS's `modify-instance-metadata-options` names with a `--metadata-` prefix;
the value `default` returns an option to the cloud-wide default.
"""

from __future__ import annotations

import argparse
from typing import Any

from openimds.metadata.options import MAX_HOP_LIMIT, OPTION_CHOICES, OPTION_NAMES

__all__ = ["add_option_flags", "options_from_args", "register_server_verbs", "show_server"]

# Relative to the compute endpoint (which ends in /v2.1).
OPTIONS_PATH = "/servers/{id}/metadata-options"


def _flag(name: str) -> str:
    return "--metadata-" + name.replace("_", "-")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    for name in OPTION_NAMES:
        if name == "http_put_response_hop_limit":
            parser.add_argument(_flag(name), dest=f"md_{name}", metavar=f"1..{MAX_HOP_LIMIT}",
                                help="IP TTL of the token PUT's answer ('default' to unset)")
        else:
            parser.add_argument(_flag(name), dest=f"md_{name}",
                                choices=[*OPTION_CHOICES[name], "default"])


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options the flags set ({} when none); 'default' becomes None (unset)."""
    out: dict[str, Any] = {}
    for name in OPTION_NAMES:
        value = getattr(args, f"md_{name}", None)
        if value is None:
            continue
        if value == "default":
            out[name] = None
        elif name == "http_put_response_hop_limit":
            # Checked by the server (1..64); a non-number is sent as is to get its message.
            out[name] = int(value) if value.isdigit() else value
        else:
            out[name] = value
    return out


def _server_set(api: Any, args: argparse.Namespace) -> Any:
    from openimds.cli.client_cmd import CliError, find

    options = options_from_args(args)
    if not options:
        raise CliError("nothing to set: give at least one --metadata-... option")
    server = find(api, "servers", args.name)
    api.request("PUT", "compute", OPTIONS_PATH.format(id=server["id"]),
                {"metadata_options": options})


def show_server(api: Any, args: argparse.Namespace) -> Any:
    """The server, with its effective metadata options and token usage."""
    from openimds.cli.client_cmd import find

    server = find(api, "servers", args.name)
    doc = api.request("GET", "compute", OPTIONS_PATH.format(id=server["id"]))
    server.pop("openimds:metadata_options", None)
    server["metadata_options"] = doc["metadata_options"]
    server["metadata_token_usage"] = doc["token_usage"]
    return server


def _token_usage(api: Any, args: argparse.Namespace) -> Any:
    return api.request("GET", "compute", "/os-metadata-token-usage")["token_usage"]


def _identity_certificate(api: Any, args: argparse.Namespace) -> Any:
    return api.request("GET", "compute", "/os-metadata-identity-certificate")


def register_server_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser], leaf: Any) -> None:
    """`server set`, `server token-usage` and `server identity-certificate` (`leaf` is
    client_cmd's leaf-command builder)."""
    p = leaf(verbs, "set", _server_set, "servers", "set a server's metadata options")
    p.add_argument("name")
    add_option_flags(p)
    leaf(verbs, "token-usage", _token_usage, "token_usage",
         "requests without a session token / with an invalid one, per server")
    leaf(verbs, "identity-certificate", _identity_certificate, "servers",
         "the certificate that signs dynamic/instance-identity documents")
