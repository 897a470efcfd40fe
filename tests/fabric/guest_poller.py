"""A guest's view of an outage: run inside a guest namespace, poll one service back to back and
print one line per attempt, `<start> <end> <1|0>` in CLOCK_MONOTONIC seconds (the clock is
system-wide, so the test compares these times with its own). Stdlib only: it runs with the system python.

    python3 guest_poller.py http URL
    python3 guest_poller.py dns SERVER_IP NAME

Each attempt has a short timeout, so an outage shows up as a run of zeros (or a silence no
longer than the timeout) between the last success before and the first success after it.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
import urllib.request

TIMEOUT = 0.2


def http_once(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as resp:
            resp.read()
            return bool(resp.status == 200)
    except OSError:
        return False


def dns_query(name: str, ident: int) -> bytes:
    # RFC 1035 header (id, RD, one question) + QNAME + QTYPE A + QCLASS IN.
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def dns_once(server: str, name: str, ident: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.sendto(dns_query(name, ident), (server, 53))
            data = s.recv(512)
        except OSError:
            return False
    # Same id, a response, RCODE 0 (NOERROR) and at least one answer.
    if len(data) < 12:
        return False
    rid, flags, _qd, ancount = struct.unpack("!HHHH", data[:8])
    return rid == ident and bool(flags & 0x8000) and flags & 0xF == 0 and ancount > 0


def main() -> None:
    mode = sys.argv[1]
    n = 0
    while True:
        n = (n + 1) & 0xFFFF
        start = time.monotonic()
        ok = http_once(sys.argv[2]) if mode == "http" else dns_once(sys.argv[2], sys.argv[3], n)
        os.write(1, f"{start:.4f} {time.monotonic():.4f} {int(ok)}\n".encode())
        if ok:
            time.sleep(0.01)


if __name__ == "__main__":
    main()
