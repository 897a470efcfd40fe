"""Schema migrations (Alembic), run by `openimds db upgrade` and by services at start-up."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import InterfaceError, OperationalError

from openimds.inventory.store import Store, normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
LOG = logging.getLogger(__name__)


def alembic_config(url: str) -> Config:
    # Alembic (with Mako and Pygments) is loaded only where a migration runs: ~14 MB that a
    # long-running service should not carry for a check made once at start.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating the SQLite file if needed)."""
    from alembic import command

    store = Store(url)  # creates the SQLite parent directory and sets WAL mode
    try:
        with store._write_engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        store.dispose()


def upgrade_when_reachable(url: str, *, retry_every: float = 2.0,
                           sleep: Callable[[float], None] = time.sleep) -> None:
    """`upgrade(url)`, first waiting for a database that cannot be reached yet (a service
    started before its database, or during its restart): one WARNING when the wait starts and
    one when it ends, never a traceback. Any other failure is raised as it is."""
    waiting = False
    while True:
        try:
            upgrade(url)
        except (OperationalError, InterfaceError) as exc:
            if not waiting:
                reason = str(exc.orig or exc).strip().splitlines()[0][:200]
                LOG.warning("inventory database unreachable (%s); waiting for it before the "
                            "schema check, retrying every %.0f s", reason, retry_every)
                waiting = True
            sleep(retry_every)
            continue
        if waiting:
            LOG.warning("inventory database reachable; schema up to date")
        return


class UpgradeFailed(Exception):
    """The schema upgrade run in a child process failed (its log says why)."""


_PR_SET_PDEATHSIG = 1


def upgrade_in_child(url: str, *, retry_every: float = 2.0) -> None:
    """`upgrade_when_reachable(url)` in a forked child, so that the long-running service that
    calls it never loads Alembic, Mako and Pygments (they stay in a process's heap once
    imported). The child logs like the caller (it inherits the logging setup); it dies with
    the caller (PR_SET_PDEATHSIG), so stopping a service that waits for its database stops
    the wait too. Call before any thread is started. Raises UpgradeFailed on failure."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the caller is already gone
                os._exit(1)
            upgrade_when_reachable(url, retry_every=retry_every)
            code = 0
        except BaseException:  # noqa: BLE001 - reported here, the exit status tells the caller
            LOG.exception("schema upgrade failed")
        finally:
            logging.shutdown()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise UpgradeFailed(f"the schema upgrade exited with status {code}")


def open_store(url: str, *, migrate: bool = True) -> Store:
    """A Store on `url`, migrated to the newest schema first when `migrate`."""
    if migrate:
        upgrade(url)
    return Store(url)
