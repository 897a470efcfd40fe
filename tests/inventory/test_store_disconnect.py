"""A connection that dies inside a transaction (a PostgreSQL restart, a backend killed): the
store ends the transaction without letting the failed ROLLBACK escape, answers what is true
(the rows read; the body's own error; StoreUnavailable for a write that could not commit),
logs no traceback, and the next transaction gets a fresh connection."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from openimds.inventory import errors
from openimds.inventory.migrate import open_store
from openimds.inventory.models import Project
from openimds.inventory.store import Store

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_fresh_url: str) -> Iterator[Store]:
    st = open_store(pg_fresh_url)
    yield st
    st.dispose()


def _kill_backend_of(store: Store, s: Session) -> None:
    """Terminate the server process behind `s`'s connection and wait until it is gone."""
    pid = s.scalar(text("SELECT pg_backend_pid()"))
    admin = make_url(store.url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row is not None and row[0] is True, f"backend {pid} did not end"


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info]
    assert logged == [], [r.getMessage() for r in logged]


def test_read_whose_connection_dies_before_its_rollback_keeps_what_it_read(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with store.session() as s:
        s.add(Project(name="p1"))
    with store.read() as s:
        names = list(s.scalars(select(Project.name)))
        _kill_backend_of(store, s)
    assert names == ["p1"]
    _no_traceback(caplog)
    with store.read() as s:  # a fresh connection from the pool
        assert list(s.scalars(select(Project.name))) == ["p1"]


def test_write_body_error_after_the_connection_died_is_the_error_raised(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.NotFound), store.session() as s:
        s.add(Project(name="gone"))
        s.flush()
        _kill_backend_of(store, s)
        raise errors.NotFound("the body's own answer")
    _no_traceback(caplog)
    with store.read() as s:
        assert list(s.scalars(select(Project.name))) == []


def test_write_that_cannot_commit_on_a_dead_connection_is_store_unavailable(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.StoreUnavailable), store.session() as s:
        s.add(Project(name="never"))
        s.flush()
        _kill_backend_of(store, s)
    _no_traceback(caplog)
    with store.session() as s:
        s.add(Project(name="after"))
    with store.read() as s:
        assert list(s.scalars(select(Project.name))) == ["after"]


def test_read_whose_query_meets_a_dead_connection_is_store_unavailable(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.StoreUnavailable), store.read() as s:
        _kill_backend_of(store, s)
        s.scalars(select(Project.name)).all()
    _no_traceback(caplog)
