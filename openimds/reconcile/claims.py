"""Which namespaces this agent owns: claim files under its own state directory.

Several openimds nodes (a test next to a real deployment, two all-in-one demos) may share one
host and so one list of `qdhcp-*`/`qrouter-*` namespaces. A name alone does not say whose it is,
so an applier claims a key (`<state_path>/claims/<kind>/<id>`) *before* creating anything for
it and releases the claim only after everything is gone. Orphan discovery reads claims, never
the host's namespace list, so an agent can never remove another node's namespaces.
"""

from __future__ import annotations

import contextlib
import os
import re

_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")


class Claims:
    def __init__(self, state_path: str, kind: str) -> None:
        self.folder = os.path.join(state_path, "claims", kind)

    def _path(self, key: str) -> str:
        if not _ID.match(key):
            raise ValueError(f"not a resource id: {key!r}")
        return os.path.join(self.folder, key)

    def add(self, key: str) -> None:
        path = self._path(key)
        if not os.path.exists(path):
            os.makedirs(self.folder, mode=0o755, exist_ok=True)
            with open(path, "w"):
                pass

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def ids(self) -> set[str]:
        try:
            return {name for name in os.listdir(self.folder) if _ID.match(name)}
        except FileNotFoundError:
            return set()
