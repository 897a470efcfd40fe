"""Cross-process behaviour of revisions and the change feed (PostgreSQL, and SQLite polling)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from openimds.inventory.migrate import open_store
from openimds.inventory.models import Network, Project

WRITER = textwrap.dedent(
    """
    import sys, time
    from openimds.inventory.store import Store
    from openimds.inventory.models import Network
    url, project, count, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    time.sleep(delay)
    st = Store(url)
    for i in range(count):
        with st.session() as s:
            s.add(Network(project_id=project, name=f"w{i}"))
    st.dispose()
    """
)


def _writer(url: str, project: str, count: int, delay: float = 0.0) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, url, project, str(count), str(delay)])


def _project(url: str) -> str:
    st = open_store(url)
    with st.session() as s:
        p = Project(name="p")
        s.add(p)
        s.flush()
        pid = p.id
    st.dispose()
    return pid


@pytest.mark.postgres
def test_revisions_strictly_increase_with_two_writer_processes(pg_fresh_url: str) -> None:
    project = _project(pg_fresh_url)
    procs = [_writer(pg_fresh_url, project, 40) for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    st = open_store(pg_fresh_url, migrate=False)
    try:
        changes = st.changes_since(0, limit=10_000)
        revisions = [c.revision for c in changes]
        assert revisions == list(range(1, 82))  # 1 project + 80 networks, no gaps, no repeats
        assert st.current_revision() == 81
        assert sum(1 for c in changes if c.resource == "network") == 80
    finally:
        st.dispose()


@pytest.mark.postgres
def test_reader_never_sees_a_revision_below_one_already_seen(pg_fresh_url: str) -> None:
    """Poll the feed while two processes write; every batch must start after the last seen."""
    project = _project(pg_fresh_url)
    st = open_store(pg_fresh_url, migrate=False)
    procs = [_writer(pg_fresh_url, project, 60) for _ in range(2)]
    seen: list[int] = []
    last = 0
    deadline = time.monotonic() + 60
    try:
        while len(seen) < 121 and time.monotonic() < deadline:
            batch = st.changes_since(last, timeout=1)
            for c in batch:
                assert c.revision == last + 1, "a revision appeared late or out of order"
                last = c.revision
                seen.append(c.revision)
        assert [p.wait(60) for p in procs] == [0, 0]
        assert seen == list(range(1, 122))
    finally:
        st.dispose()


@pytest.mark.postgres
def test_long_poll_wakes_promptly_on_commit_from_another_process(pg_fresh_url: str) -> None:
    project = _project(pg_fresh_url)
    st = open_store(pg_fresh_url, migrate=False)
    try:
        rev = st.current_revision()
        st.changes_since(rev, timeout=0.2)  # starts the LISTEN thread
        proc = _writer(pg_fresh_url, project, 1, delay=1.0)
        start = time.monotonic()
        got = st.changes_since(rev, timeout=20)
        waited = time.monotonic() - start
        assert proc.wait(30) == 0
        assert [(c.resource, c.op) for c in got] == [("network", "create")]
        # The writer sleeps 1 s and needs ~1 s to import and connect; NOTIFY wakes us at once.
        assert waited < 8
    finally:
        st.dispose()


def test_sqlite_long_poll_sees_another_process_commit(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/feed.sqlite"
    project = _project(url)
    st = open_store(url, migrate=False)
    try:
        rev = st.current_revision()
        proc = _writer(url, project, 1, delay=0.5)
        got = st.changes_since(rev, timeout=20)
        assert proc.wait(30) == 0
        assert [(c.resource, c.op) for c in got] == [("network", "create")]
        with st.read() as s:
            assert s.query(Network).count() == 1
    finally:
        st.dispose()
