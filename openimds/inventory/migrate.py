"""Schema migrations (Alembic), run by `openimds db upgrade` and by services at start-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import InterfaceError, OperationalError

from openimds.inventory.store import Store, normalize_url

MIGRATIONS = Path(__file__).with_name("migrations")
LOG = logging.getLogger(__name__)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating the SQLite file if needed)."""
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


def open_store(url: str, *, migrate: bool = True) -> Store:
    """A Store on `url`, migrated to the newest schema first when `migrate`."""
    if migrate:
        upgrade(url)
    return Store(url)
