"""bound_heap_retention: freed large buffers go back to the kernel (issue 14: control-api RSS).

Runs in a fresh interpreter (the heap of the test process is shared by every test): eight
threads check a password (scrypt's 16 MiB work buffer each) five times; with the fixed
threshold the process keeps almost none of it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import re
from concurrent.futures import ThreadPoolExecutor
from openimds.control.passwords import hash_password, verify_password
from openimds.linux.malloc import bound_heap_retention

def rss_mb():
    text = open("/proc/self/status").read()
    return int(re.search(r"VmRSS:\\s+(\\d+)", text).group(1)) / 1024

assert bound_heap_retention()
stored = hash_password("pw")
before = rss_mb()
with ThreadPoolExecutor(8) as pool:
    for _ in range(5):
        assert all(pool.map(lambda _: verify_password("pw", stored), range(8)))
print(rss_mb() - before)
"""


def test_password_checks_on_threads_leave_no_resident_work_buffers() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         cwd=REPO, timeout=300, check=True)
    grown = float(out.stdout.strip())
    # One retained 16 MiB buffer per thread would be > 100 MB; a few MB is thread stacks.
    assert grown < 16, out.stdout + out.stderr
