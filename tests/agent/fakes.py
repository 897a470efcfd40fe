"""An in-memory InventoryFeed and a signature-checking stand-in for the metadata API."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from openimds.agent.feed import ChangeBatch, ChangeRecord, FeedUnavailable, Snapshot
from openimds.wire import verify_signature

IFACE = "network:router_interface"


def port_dict(pid: str, net: str, ip: str, *, device: str, owner: str = "compute:nova",
              project: str = "proj", mac: str | None = None) -> dict[str, Any]:
    # crc32, not hash(): str hashes change per process, and a test's MACs must not.
    mac = mac or f"fa:16:3e:{zlib.crc32(pid.encode()) & 0xffffff:06x}"
    return {"id": pid, "network_id": net, "mac_address": mac,
            "fixed_ips": [{"subnet_id": f"sub-{net}", "ip_address": ip}],
            "device_id": device, "device_owner": owner, "project_id": project}


class FakeFeed:
    """The control plane as the agent sees it: ports, routers, a revisioned change log."""

    def __init__(self) -> None:
        self.ports: dict[str, dict[str, Any]] = {}
        self.routers: set[str] = set()
        self.log: list[ChangeRecord] = []
        self.down = False
        self._cond = asyncio.Condition()
        self.snapshots = 0

    @property
    def revision(self) -> int:
        return self.log[-1].revision if self.log else 0

    async def _record(self, resource: str, rid: str, op: str) -> None:
        async with self._cond:
            self.log.append(ChangeRecord(self.revision + 1, resource, rid, op))
            self._cond.notify_all()

    async def put_port(self, port: dict[str, Any]) -> None:
        op = "update" if port["id"] in self.ports else "create"
        self.ports[port["id"]] = port
        await self._record("port", port["id"], op)

    async def delete_port(self, pid: str) -> None:
        del self.ports[pid]
        await self._record("port", pid, "delete")

    async def put_router(self, rid: str) -> None:
        self.routers.add(rid)
        await self._record("router", rid, "create")

    async def set_down(self, down: bool) -> None:
        async with self._cond:
            self.down = down
            self._cond.notify_all()

    def _check(self) -> None:
        if self.down:
            raise FeedUnavailable("fake control plane is down")

    async def snapshot(self) -> Snapshot:
        self._check()
        self.snapshots += 1
        return Snapshot(self.revision, [dict(p) for p in self.ports.values()],
                        sorted(self.routers))

    async def changes(self, since: int, timeout: float) -> ChangeBatch:
        self._check()
        async with self._cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self.down or self.revision > since), timeout)
        self._check()
        recs = [r for r in self.log if r.revision > since]
        return ChangeBatch(recs, recs[-1].revision if recs else since)

    async def get_port(self, port_id: str) -> Mapping[str, Any] | None:
        self._check()
        return self.ports.get(port_id)

    async def get_router(self, router_id: str) -> Mapping[str, Any] | None:
        self._check()
        return {"id": router_id} if router_id in self.routers else None

    async def ports_of_device(self, device_id: str) -> Sequence[Mapping[str, Any]]:
        self._check()
        return [p for p in self.ports.values() if p["device_id"] == device_id]


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
