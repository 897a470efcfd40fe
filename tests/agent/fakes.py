"""Port rows for the in-memory feed (`openimds.feed.MemoryFeed`) and a signature-checking
stand-in for the metadata API."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

from aiohttp import web

from openimds.wire import verify_signature

IFACE = "network:router_interface"


def port_dict(pid: str, net: str, ip: str, *, device: str, owner: str = "compute:nova",
              project: str = "proj", mac: str | None = None) -> dict[str, Any]:
    # crc32, not hash(): str hashes change per process, and a test's MACs must not.
    mac = mac or f"fa:16:3e:{zlib.crc32(pid.encode()) & 0xffffff:06x}"
    return {"id": pid, "network_id": net, "mac_address": mac,
            "fixed_ips": [{"subnet_id": f"sub-{net}", "ip_address": ip}],
            "device_id": device, "device_owner": owner, "project_id": project}


GZ_BODY = gzip.compress(b"#cloud-config\nhostname: x\n")


def metadata_stub(secret: str) -> web.Application:
    """Answers like the metadata API: 403 on a bad signature, else echoes who asked."""

    async def handle(request: web.Request) -> web.Response:
        iid = request.headers.getall("X-Instance-ID", [])
        sig = request.headers.getall("X-Instance-ID-Signature", [])
        tenant = request.headers.getall("X-Tenant-ID", [])
        if len(iid) != 1 or len(sig) != 1 or len(tenant) != 1:
            return web.Response(status=400, text="identity headers missing or repeated")
        if not verify_signature(secret, iid[0], sig[0]):
            return web.Response(status=403, text="Invalid proxy request signature.")
        if request.path == "/user_data.gz":
            return web.Response(body=GZ_BODY, content_type="application/octet-stream")
        if request.path == "/slow":
            await asyncio.sleep(float(request.query.get("s", "5")))
        if request.path == "/latest/api/token":
            ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            return web.Response(text="tok", headers={
                "X-aws-ec2-metadata-token-ttl-seconds": ttl, "X-OpenIMDS-Hop-Limit": "3"})
        body = await request.read()
        return web.Response(
            status=200 if request.path != "/missing" else 404,
            text=json.dumps({
                "instance": iid[0], "tenant": tenant[0], "method": request.method,
                "path": request.path_qs, "body": body.decode(),
                "xff": request.headers.getall("X-Forwarded-For", []),
                "guest_header": request.headers.get("X-Guest", ""),
                "token": request.headers.getall("X-aws-ec2-metadata-token", []),
                "guest_forwarded": request.headers.getall("X-OpenIMDS-Guest-Forwarded", []),
            }),
            content_type="application/json", charset="utf-8")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
