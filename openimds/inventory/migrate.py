"""Schema migrations (Alembic), run by `openimds db upgrade` and by services at start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from openimds.inventory.store import Store, normalize_url

MIGRATIONS = Path(__file__).with_name("migrations")


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


def open_store(url: str, *, migrate: bool = True) -> Store:
    """A Store on `url`, migrated to the newest schema first when `migrate`."""
    if migrate:
        upgrade(url)
    return Store(url)
