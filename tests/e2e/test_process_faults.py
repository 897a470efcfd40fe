"""kill -9 of each long-running service of a real all-in-one while a guest keeps crawling.

A guest in its own namespace polls its meta_data.json every 100 ms through the whole chain. We
kill -9 the metadata agent, the metadata API and the control-plane API in turn; the all-in-one
restarts each. Every answer must be either this guest's own document, a 503 while a hop is
restarting, or a connection error — never another instance's data, never a 500. The outage per
fault is printed (the bar lives in bench/bench_faults.py, not here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.cloud import Cloud, _clean_env
from tests.fabric.lab import wait_for

pytestmark = pytest.mark.root

# Runs inside the guest namespace: one line per request, "<monotonic> <status> <uuid|->".
POLLER = """
import json, sys, time, urllib.request, urllib.error, os
stop = sys.argv[1]
while not os.path.exists(stop):
    t = time.monotonic()
    try:
        r = urllib.request.urlopen(
            'http://169.254.169.254/openstack/latest/meta_data.json', timeout=2)
        status, who = r.status, json.loads(r.read()).get('uuid', '-')
    except urllib.error.HTTPError as e:
        status, who = e.code, '-'
    except Exception:
        status, who = 0, '-'
    print(f'{t:.3f} {status} {who}', flush=True)
    time.sleep(0.1)
"""


def _outage(lines: list[tuple[float, int, str]], since: float) -> float:
    """Seconds from the first failed answer after `since` to the next good one (0 if none)."""
    first_bad = next((t for t, s, _ in lines if t >= since and s != 200), None)
    if first_bad is None:
        return 0.0
    back = next((t for t, s, _ in lines if t > first_bad and s == 200), None)
    assert back is not None, "the guest never got its metadata back"
    return back - first_bad


def test_kill_9_of_each_service_during_a_crawl(cloud: Cloud, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    cloud.cli("net-create", f"faults-{tag}")
    cloud.cli("subnet-create", "--no-gateway", "--name", f"faults-sub-{tag}", f"faults-{tag}",
              "192.168.121.0/24")
    server = cloud.cli("server", "create", f"vm-faults-{tag}", "--network", f"faults-{tag}")
    guest = cloud.boot_guest(cloud.server_port(server["id"])["id"])
    cloud.dhcp(guest)
    assert cloud.metadata(guest)["uuid"] == server["id"]

    stop = tmp_path / "stop"
    out = open(tmp_path / "poll.log", "w")  # noqa: SIM115 - closed below
    poller = subprocess.Popen(
        ["ip", "netns", "exec", guest, sys.executable, "-c", POLLER, str(stop)],
        stdout=out, stderr=subprocess.STDOUT, env=_clean_env())
    starts: dict[str, float] = {}
    try:
        for service in ("metadata-agent", "metadata-api", "control-api"):
            old = cloud.child_pid(service)
            assert old is not None, f"{service} is not running"
            starts[service] = time.monotonic()
            subprocess.run(["kill", "-9", str(old)], check=True)
            wait_for(lambda s=service, o=old: cloud.child_pid(s) not in (None, o),
                     timeout=60)
            # Back: the guest is answered again through the restarted service, and the
            # control plane answers operators again (its restart does not touch the guest).
            wait_for(lambda: cloud.fetch(guest, "/openstack/latest/meta_data.json",
                                         timeout=3)[0] == 200, timeout=60, interval=0.2)
            wait_for(lambda: cloud._cli_ok("network", "list"), timeout=60, interval=0.3)
    finally:
        stop.touch()
        try:
            poller.wait(timeout=30)
        finally:
            if poller.poll() is None:
                poller.kill()
            out.close()

    lines = []
    for raw in (tmp_path / "poll.log").read_text().splitlines():
        t, status, who = raw.split()
        lines.append((float(t), int(status), who))
    assert len(lines) > 20, "the poller made too few requests to say anything"
    statuses = {s for _, s, _ in lines}
    assert statuses <= {0, 200, 503}, f"unexpected answers during the faults: {statuses}"
    wrong = [(t, who) for t, s, who in lines if s == 200 and who != server["id"]]
    assert wrong == [], f"another instance's data was served: {wrong[:3]}"
    # A change made after the control plane came back still reaches the guest's answers.
    cloud.cli("server", "set", "--metadata-http-endpoint", "disabled", server["id"])
    wait_for(lambda: cloud.fetch(guest, "/openstack/latest/meta_data.json", timeout=3)[0] == 403,
             timeout=30, interval=0.3)
    figures = {name: round(_outage(lines, at), 2) for name, at in starts.items()}
    failed = sum(1 for _, s, _ in lines if s != 200)
    print(f"\nkill -9 during a crawl: {len(lines)} requests, {failed} failed; "
          f"guest outage per fault (s): {json.dumps(figures)}")
