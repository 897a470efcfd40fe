"""Version documents (what keystoneauth, openstacksdk and novaclient discover before any call)
and compute microversion negotiation.

* `GET /` lists every API this server speaks: Neutron v2.0, Nova v2.1 (with its microversion
  range), Keystone v3 (and the legacy v2.0 token route) — one listing, as one process serves
  all of them on one port.
* `GET /v2.1` is Nova's single-version document (`version`, `min_version`), `GET /v3` is
  Keystone's, `GET /image` is Glance's version list (the image service lives under `/image`).
* Compute requests may ask for a microversion with `OpenStack-API-Version: compute 2.N` or the
  legacy `X-OpenStack-Nova-API-Version: 2.N`; `latest` means the maximum. Absent = 2.1. The
  answer names the version it was rendered at in both headers, as Nova does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from openimds.control.call import Call, Reply
from openimds.control.errors import ApiError, BadRequest

# The highest compute microversion whose response shapes openimds renders: 2.26 adds server
# tags, 2.47 embeds the flavor in a server. Key pair generation (gone in 2.92) stays available.
MIN_MICROVERSION = (2, 1)
MAX_MICROVERSION = (2, 47)
COMPUTE_UPDATED = "2013-07-23T11:33:21Z"
IDENTITY_VERSION = "v3.14"
IMAGE_VERSIONS = ("v2.16", "v2.15", "v2.9", "v2.0")

_MEDIA_NOVA = [{"base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1"}]
_MEDIA_KEYSTONE = [{"base": "application/json",
                    "type": "application/vnd.openstack.identity-v3+json"}]


class NotAcceptable(ApiError):
    """406: a microversion outside the supported range (Nova's VersionNotFoundForAPIMethod)."""

    status = 406
    neutron_type = "HTTPNotAcceptable"
    nova_key = "notAcceptable"
    title = "Not Acceptable"


def text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def parse_microversion(headers: Mapping[str, str]) -> tuple[int, int]:
    """The compute microversion a request asks for (2.1 when it names none)."""
    raw = None
    modern = headers.get("OpenStack-API-Version")
    if modern:
        # "compute 2.47" or a comma-separated list for several services.
        for item in modern.split(","):
            service, _, value = item.strip().partition(" ")
            if service.lower() == "compute":
                raw = value.strip()
    if raw is None:
        raw = headers.get("X-OpenStack-Nova-API-Version")
    if raw is None or not raw.strip():
        return MIN_MICROVERSION
    raw = raw.strip()
    if raw.lower() == "latest":
        return MAX_MICROVERSION
    match = _VERSION.match(raw)
    if match is None:
        raise BadRequest(f"API Version String {raw!r} is of invalid format. Must be of format "
                         "MajorNum.MinorNum (e.g. 2.47) or latest.")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_MICROVERSION <= version <= MAX_MICROVERSION:
        raise NotAcceptable(f"Version {raw} is not supported by the API. Minimum is "
                            f"{text(MIN_MICROVERSION)} and maximum is {text(MAX_MICROVERSION)}.")
    return version


def microversion_headers(version: tuple[int, int]) -> dict[str, str]:
    value = text(version)
    return {"OpenStack-API-Version": f"compute {value}",
            "X-OpenStack-Nova-API-Version": value,
            "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version"}


def _base(call: Call) -> str:
    return call.base_url.rstrip("/")


def compute_version(call: Call) -> dict[str, Any]:
    return {"id": "v2.1", "status": "CURRENT", "version": text(MAX_MICROVERSION),
            "min_version": text(MIN_MICROVERSION), "updated": COMPUTE_UPDATED,
            "links": [{"rel": "self", "href": f"{_base(call)}/v2.1/"}],
            "media-types": _MEDIA_NOVA}


def identity_version(call: Call) -> dict[str, Any]:
    return {"id": IDENTITY_VERSION, "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{_base(call)}/v3/"}],
            "media-types": _MEDIA_KEYSTONE}


def network_version(call: Call) -> dict[str, Any]:
    return {"id": "v2.0", "status": "CURRENT",
            "links": [{"rel": "self", "href": f"{_base(call)}/v2.0/"}]}


def root_versions(call: Call) -> Reply:
    """`GET /`: every API this server speaks."""
    return Reply(200, {"versions": [network_version(call), compute_version(call),
                                    identity_version(call)]})


def show_compute_version(call: Call) -> Reply:
    """`GET /v2.1`: Nova's version document with the microversion range."""
    return Reply(200, {"version": compute_version(call)})


def show_identity_version(call: Call) -> Reply:
    """`GET /v3`: Keystone's version document."""
    return Reply(200, {"version": identity_version(call)})


def show_v2_version(call: Call) -> Reply:
    """`GET /v2.0`: both readers of this prefix in one document — keystoneauth's discovery of a
    v2.0 auth URL (`version`) and Neutron's resource index (`resources`)."""
    base = _base(call)
    resources = [{"name": r.rstrip("s"), "collection": r,
                  "links": [{"rel": "self", "href": f"{base}/v2.0/{r}"}]}
                 for r in ("networks", "subnets", "ports", "routers", "security-groups",
                           "security-group-rules", "extensions")]
    return Reply(200, {"version": {"id": "v2.0", "status": "deprecated",
                                   "updated": "2014-04-17T00:00:00Z",
                                   "links": [{"rel": "self", "href": f"{base}/v2.0/"}],
                                   "media-types": [{"base": "application/json",
                                                    "type": "application/vnd.openstack."
                                                            "identity-v2.0+json"}]},
                       "resources": resources})


def image_versions(call: Call) -> Reply:
    """`GET /image`: Glance's version list (the image API is `/image/v2`)."""
    href = f"{_base(call)}/image/v2/"
    return Reply(200, {"versions": [
        {"id": v, "status": "CURRENT" if i == 0 else "SUPPORTED",
         "links": [{"rel": "self", "href": href}]}
        for i, v in enumerate(IMAGE_VERSIONS)]})


__all__ = ["MAX_MICROVERSION", "MIN_MICROVERSION", "NotAcceptable", "compute_version",
           "image_versions", "microversion_headers", "parse_microversion", "root_versions",
           "show_compute_version", "show_identity_version", "show_v2_version"]
