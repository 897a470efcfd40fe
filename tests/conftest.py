"""Fixtures shared by the whole suite.

Root-only tests (namespaces, haproxy, dnsmasq, iptables) run whenever we are root; when not root
they skip, except under CI=true where a skip would hide untested code, so they fail instead.
PostgreSQL tests read OPENIMDS_TEST_DATABASE_URL; under CI=true a missing URL is a failure.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL_ENV = "OPENIMDS_TEST_DATABASE_URL"

# Property tests assert behaviour, never speed: no per-example deadline and no "too slow"
# health check (both are timings; on a busy machine they failed tests whose assertions held).
settings.register_profile("openimds", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("openimds")


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: this test must run in CI")
    pytest.skip(reason)


@pytest.fixture
def needs_root() -> None:
    """Use in any test that needs root and network namespaces."""
    _need(os.geteuid() == 0, "needs root (network namespaces)")


@pytest.fixture
def pg_url() -> str:
    """URL of a throwaway PostgreSQL server (started by .ci/run or by the developer)."""
    url = os.environ.get(PG_URL_ENV, "")
    _need(bool(url), f"{PG_URL_ENV} is not set")
    return url


def _delete_netns(name: str) -> None:
    # Stop whatever we started inside (by pid, only pids living in our own namespace).
    pids = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True
    ).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], capture_output=True)
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.fixture
def make_netns(needs_root: None) -> Iterator[Callable[[str], str]]:
    """Factory for uniquely named test namespaces ("oit-<tag>-<hex>"), always deleted after."""
    created: list[str] = []

    def factory(tag: str = "ns") -> str:
        name = f"oit-{tag}-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        created.append(name)
        return name

    try:
        yield factory
    finally:
        for name in reversed(created):
            _delete_netns(name)


@pytest.fixture
def pg_fresh_url(pg_url: str) -> Iterator[str]:
    """A brand-new empty PostgreSQL database on the test server, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(pg_url)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """Run a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/inventory.sqlite"
    return str(request.getfixturevalue("pg_fresh_url"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many PostgreSQL tests really ran, so CI output proves it."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if "postgres" not in getattr(report, "keywords", {}):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            counts[outcome] = counts.get(outcome, 0) + 1
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none ran"
    terminalreporter.write_line(f"openimds: PostgreSQL tests: {summary}")
