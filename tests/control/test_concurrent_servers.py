"""Concurrent server creates on one subnet all succeed, each with its own address (SQLite and
PostgreSQL). On PostgreSQL every writer sees the same lowest free address; the loser of the race
retries from a window of free addresses (control/ipam.py)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from openimds.control import auth, networks, servers, subnets
from openimds.control.call import Call, Settings
from openimds.control.context import RequestContext
from openimds.inventory.migrate import open_store


def test_sixteen_writers_create_servers_without_a_conflict(db_url: str) -> None:
    store = open_store(db_url)
    try:
        project_id, user_id = auth.bootstrap(store, "pw-123456")
        ctx = RequestContext(user_id, "admin", project_id, "admin", ("admin",))

        def call(fn: object, body: dict[str, object]) -> dict[str, object]:
            return fn(Call(store=store, settings=Settings(), ctx=ctx,  # type: ignore[operator]
                           body=body)).body

        net = call(networks.create_network, {"network": {"name": "busy"}})["network"]
        network_id = net["id"]  # type: ignore[index]
        call(subnets.create_subnet, {"subnet": {"network_id": network_id,
                                                 "cidr": "10.6.0.0/24", "enable_dhcp": False}})

        def create(i: int) -> str:
            try:
                body = call(servers.create_server, {"server": {
                    "name": f"vm-{i}", "networks": [{"uuid": network_id}]}})
            except Exception as exc:  # the API's edge would map it to its status
                return f"{type(exc).__name__}: {exc}"
            server = body["server"]
            return str(server["addresses"])  # type: ignore[index]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(create, range(120)))
        failures = Counter(r for r in results if not r.startswith("{"))
        assert not failures, failures
        assert len(set(results)) == 120  # every server its own address
    finally:
        store.dispose()
