"""Concurrent tenant network creates never share a VNI (SQLite and PostgreSQL): the unique
segment key refuses the loser, which picks again."""

from __future__ import annotations

import threading

from sqlalchemy import select

from openimds.control import auth
from openimds.control.call import Call, Settings
from openimds.control.context import RequestContext
from openimds.control.networks import create_network
from openimds.control.segments import segment_config
from openimds.inventory.migrate import open_store
from openimds.inventory.models import Network


def test_parallel_creates_get_distinct_vnis_until_the_range_is_used_up(db_url: str) -> None:
    store = open_store(db_url)
    try:
        project_id, user_id = auth.bootstrap(store, "pw-123456")
        ctx = RequestContext(user_id, "admin", project_id, "admin", ("admin",))
        settings = Settings(segments=segment_config(["vxlan"], ["100:111"], []))
        statuses: list[int] = []
        lock = threading.Lock()

        def create(i: int) -> None:
            call = Call(store=store, settings=settings, ctx=ctx,
                        body={"network": {"name": f"n{i}"}})
            try:
                status = create_network(call).status
            except Exception as exc:  # the API's error edge would map it; keep its status
                status = int(getattr(exc, "status", 500))
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(14)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with store.read() as s:
            vnis = list(s.scalars(select(Network.segmentation_id)))
        assert sorted(vnis) == list(range(100, 112))  # 12 ids, each once
        assert sorted(statuses) == [201] * 12 + [503] * 2
    finally:
        store.dispose()
