"""Benchmark: the CPU cost of IMDSv2 session tokens in the metadata API, same run.

Not a test. Seeds a SQLite inventory, starts the real `openimds metadata-api` (one worker,
proxy mode), gets a token per instance with `PUT /latest/api/token`, then drives wrk in
alternating rounds with three loads, every request signed for one of the instances:

* tokenless GET   /latest/meta-data/instance-id          (IMDSv1, the reference)
* GET with token  the same path plus X-aws-ec2-metadata-token (the instance's own token)
* token PUT       /latest/api/token with the TTL header  (what a client does first)

and reports the server's CPU time per request (all its processes) for each, then the bar:
a GET with a token costs at most 1.2x the tokenless GET. PUT + GET (a client that fetches a
new token for every read, like botocore) is printed as a ratio too.

    .venv/bin/python bench/bench_tokens.py [--duration 10] [--rounds 3] [--instances 100]
        [--connections 64] [--threads 2] [--json out.json]

Needs wrk on PATH. Only processes started here are stopped (by pid).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_metadata_api import (  # noqa: E402
    SECRET,
    Result,
    run_wrk,
    seed,
    start_api,
    stop,
)

from openimds.wire import sign_instance_id  # noqa: E402

PATH = "/latest/meta-data/instance-id"


def put_token(base: str, uuid: str, project: str) -> str:
    req = urllib.request.Request(
        base + "/latest/api/token",
        method="PUT",
        headers={
            "X-Instance-ID": uuid,
            "X-Tenant-ID": project,
            "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
            "X-aws-ec2-metadata-token-ttl-seconds": "21600",
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return str(resp.read().decode())


def lua(path: Path, rows: list[tuple[str, str, str]], mode: str) -> None:
    table = ",\n".join(
        f'{{"{u}", "{p}", "{sign_instance_id(SECRET, u)}", "{t}"}}' for u, p, t in rows
    )
    if mode == "put":
        tail = (
            '  wrk.headers["X-aws-ec2-metadata-token-ttl-seconds"] = "21600"\n'
            '  return wrk.format("PUT", "/latest/api/token")\n'
        )
    else:
        token = '  wrk.headers["X-aws-ec2-metadata-token"] = row[4]\n' if mode == "token" else ""
        tail = token + f'  return wrk.format("GET", "{PATH}")\n'
    path.write_text(
        f"""
local ids = {{
{table}
}}
local n = 0
request = function()
  n = n + 1
  local row = ids[(n % #ids) + 1]
  wrk.headers["X-Instance-ID"] = row[1]
  wrk.headers["X-Tenant-ID"] = row[2]
  wrk.headers["X-Instance-ID-Signature"] = row[3]
{tail}end
"""
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk not found on PATH")
    with tempfile.TemporaryDirectory(prefix="openimds-bench-tokens-") as tmpdir:
        tmp = Path(tmpdir)
        url = f"sqlite:///{tmp}/inv.sqlite"
        pairs = seed(url, args.instances)
        api, base, _ops = start_api(tmp, url, 1)
        try:
            rows = [(u, p, put_token(base, u, p)) for u, p in pairs]
            scripts = {}
            for mode in ("tokenless", "token", "put"):
                scripts[mode] = tmp / f"{mode}.lua"
                lua(scripts[mode], rows, mode)
            rounds: dict[str, list[Result]] = {m: [] for m in scripts}
            for _ in range(args.rounds):
                for mode, script in scripts.items():
                    rounds[mode].append(run_wrk(mode, base + PATH, args, script, api.pid))
        finally:
            stop(api)
    cpu = {}
    for mode, results in rounds.items():
        errors = sum(r.errors for r in results)
        per_req = [r.cpu_us_per_request(args.duration) or 0.0 for r in results]
        cpu[mode] = statistics.median(per_req)
        rps = statistics.median(r.rps for r in results)
        print(f"{mode:10s} {rps:9.0f} req/s  cpu {cpu[mode]:6.1f} us/req  non-2xx {errors}  "
              f"[{args.rounds} rounds]", flush=True)
        if errors:
            print(f"FAIL  {mode}: {errors} non-2xx answers (the load is not what it claims)")
            return 1
    # Per-round ratios (runs seconds apart) are steadier than a ratio of medians.
    ratio = statistics.median(
        (t.cpu_us_per_request(args.duration) or 0) / (n.cpu_us_per_request(args.duration) or 1)
        for t, n in zip(rounds["token"], rounds["tokenless"], strict=True)
    )
    pair = (cpu["put"] + cpu["token"]) / cpu["tokenless"]
    ok = ratio <= 1.2
    bars = [
        f"{'PASS' if ok else 'FAIL'}  GET with a token: {ratio:.2f}x the tokenless GET's CPU "
        f"(bar <= 1.2x)",
        f"info  token PUT + GET with it: {pair:.2f}x one tokenless GET "
        f"(PUT alone {cpu['put'] / cpu['tokenless']:.2f}x)",
    ]
    print("\n".join(bars))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_us": cpu, "ratio": ratio, "bars": bars},
                                              indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
