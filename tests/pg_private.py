"""A PostgreSQL server of the test's own, which the test may stop and start again (outages).

Started by `scripts/pg-test-server.sh` (its own data dir, 127.0.0.1, a free port); `stop()` is
a real `pg_ctl stop -m immediate` (connections are cut as in a crash) and `start()` brings the
same cluster back on the same port. `close()` stops it and removes its directory.
"""

from __future__ import annotations

import glob
import shlex
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg-test-server.sh"


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                   key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()])
    if not found:
        raise RuntimeError("PostgreSQL server binaries are not installed")
    return found[-1]


class PrivatePostgres:
    def __init__(self) -> None:
        out = subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True,
                             text=True).stdout
        env = dict(item.split("=", 1) for item in shlex.split(out.strip())[1:])
        self.url = env["OPENIMDS_TEST_DATABASE_URL"]
        self.dir = env["PG_TEST_DIR"]
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{_bindir()}/pg_ctl", "-D",
                        f"{self.dir}/data", *args], check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-l", f"{self.dir}/log", "-w", "-o",
                     f"-k {self.dir} -h 127.0.0.1 -p {self.port} -c fsync=off "
                     "-c max_connections=200", "start")

    def close(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", self.dir], check=False)
