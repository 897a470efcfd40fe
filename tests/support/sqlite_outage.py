"""Take an SQLite inventory away and give it back, each in one atomic step.

The database lives in a directory of its own, and the outage renames that directory. While it
is gone no connection can open the file and SQLite cannot create a new one (its parent is
missing). Replacing the file with a directory instead leaves a window on the way back (the
directory removed, the file not yet renamed in) in which a retrying reader creates an empty
database and keeps it open: it then never sees the real one again.
"""

from __future__ import annotations

import os
from pathlib import Path

from openimds.inventory.store import Store


class SqliteOutage:
    """`url` names `<parent>/live/inventory.sqlite`; `down()` and `up()` move `live` away and
    back. `down(store)` also closes the store's pooled connections (which would keep the old
    file open), as a restarted process would."""

    def __init__(self, parent: Path, name: str = "inventory.sqlite") -> None:
        self.live = parent / "live"
        self.gone = parent / "gone"
        self.live.mkdir(parents=True, exist_ok=True)
        self.path = self.live / name
        self.url = f"sqlite:///{self.path}"

    def down(self, store: Store | None = None) -> None:
        os.rename(self.live, self.gone)
        if store is not None:
            store._read_engine.dispose()
            store._write_engine.dispose()

    def up(self) -> None:
        os.rename(self.gone, self.live)
