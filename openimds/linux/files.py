"""The files openimds owns: read one that may be absent, replace one atomically.

    read_text(path) -> str | None                      None when the file (or its /proc pid) is gone
    write_atomic(path, text, mode=0o644, check=None)   temp file in the same folder, chmod,
                                                       check(temp path), rename over `path`

Readers (dnsmasq re-reading its hosts file on SIGHUP, haproxy reloading) never see a half-written
file, and a `check` that raises (haproxy's `-c` on the new config) leaves the old file in place.
One module for both users, the typed actions and the haproxy supervisor, so that neither
imports the other.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable

__all__ = ["read_text", "write_atomic"]


def read_text(path: str) -> str | None:
    """The file's text, or None if it does not exist (or its /proc process has gone)."""
    try:
        with open(path) as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def write_atomic(path: str, text: str, mode: int = 0o644, *,
                 check: Callable[[str], None] | None = None) -> None:
    """Replace `path` with `text` (creating its folder, 0755). `check(temp_path)` runs on the
    complete new file before the rename; whatever it raises propagates and `path` is left as
    it was. The temporary file never survives the call."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        # dnsmasq and haproxy re-read their files after dropping privileges: keep them readable.
        os.chmod(tmp, mode)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
