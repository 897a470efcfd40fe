"""An abusive guest: open N TCP connections to HOST:PORT, send nothing, hold them until
killed. Prints `ready <attempted> <established>` once every connect has finished. Stdlib only,
run with the system python inside a guest namespace."""

from __future__ import annotations

import resource
import selectors
import signal
import socket
import sys


def main() -> None:
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    established, pending = 0, n
    while pending:
        events = sel.select(timeout=5)
        if not events:
            break
        for key, _ in events:
            sel.unregister(key.fileobj)
            pending -= 1
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                established += 1
    print(f"ready {n} {established}", flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
