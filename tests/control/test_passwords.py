"""Password hashing: round trip, and a bounded number of KDF work buffers at once (issue 14:
the control-api's RSS; it answers on 32 threads and each scrypt check holds 16 MiB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from openimds.control.passwords import KDF_SLOTS, hash_password, verify_password

REPO = Path(__file__).resolve().parents[2]


def test_round_trip_and_wrong_password() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert not verify_password("s3cret", "scrypt$bad")
    assert not verify_password("s3cret", "bcrypt$1$2$3$4$5")


# Sixteen threads check at once, in a fresh interpreter so the peak (VmHWM) is this load's.
SCRIPT = """
import re, threading
from openimds.control.passwords import hash_password, verify_password
from openimds.linux.malloc import bound_heap_retention

def hwm_mb():
    text = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+)", text).group(1)) / 1024

bound_heap_retention()
stored = hash_password("pw")
start = threading.Barrier(16)
results = []

def check():
    start.wait()
    results.append(verify_password("pw", stored))

threads = [threading.Thread(target=check) for _ in range(16)]
# Stacks and interpreter state of the threads count in the peak too: start them first.
before = hwm_mb()
for t in threads:
    t.start()
for t in threads:
    t.join()
assert results == [True] * 16
print(hwm_mb() - before)
"""


def test_concurrent_checks_hold_at_most_kdf_slots_work_buffers() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         cwd=REPO, timeout=300, check=True)
    peak = float(out.stdout.strip())
    # Sixteen unbounded checks would need 16 x 16 MiB = 256 MiB at once.
    assert peak < KDF_SLOTS * 16 + 24, out.stdout + out.stderr
