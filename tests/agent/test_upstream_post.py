"""A POST (the password: a write) is never sent on a pooled connection. The server may have
closed an idle one (keep-alive timeout, a replica killed) before the agent's loop noticed; the
request would be written into a dead connection and its lost answer could not be told from a
request the server did receive, so it could not be sent again: the guest got a 503."""

from __future__ import annotations

import socket
import threading

from openimds.agent.resolve import Resolution
from openimds.agent.settings import AgentSettings
from openimds.agent.upstream import Upstream

RES = Resolution("3bd4b0d2-8a7e-4c55-9b8e-5f1f0c7a0d11", "p1", "10.0.0.5", "port-1", "net-1")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head.split(b"\r\n")[0]


class ClosingServer:
    """Answers one request per connection with 200, then closes that connection (as a
    server whose keep-alive timeout fired, or a replica that went away, does)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.closed = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.requests.append(_read_request(conn))
                conn.sendall(OK)
            self.closed.release()

    def stop(self) -> None:
        self.listener.close()


def _upstream_of(server: ClosingServer) -> Upstream:
    return Upstream(AgentSettings(socket_path="unused", shared_secret="s",
                                  upstream_urls=(server.url,), upstream_timeout=10.0,
                                  upstream_connect_timeout=5.0))


async def test_a_post_after_the_server_closed_the_pooled_connection_is_delivered() -> None:
    server = ClosingServer()
    upstream = _upstream_of(server)
    try:
        first = await upstream.forward("GET", "/openstack/latest/meta_data.json", b"", RES)
        assert first.status == 200
        # Blocking on purpose: the agent's loop does not run, so it has not yet seen that
        # the server closed the connection it keeps in its pool, as under load.
        assert server.closed.acquire(timeout=10)
        answer = await upstream.forward("POST", "/openstack/latest/password", b"pw", RES)
        assert answer.status == 200
        assert server.requests == [b"GET /openstack/latest/meta_data.json HTTP/1.1",
                                   b"POST /openstack/latest/password HTTP/1.1"]
    finally:
        await upstream.close()
        server.stop()


async def test_a_token_put_on_a_pooled_connection_the_server_closed_is_sent_again() -> None:
    """IMDSv2's token PUT may take a pooled connection (it writes nothing); when the server
    had closed it, the PUT is sent again on a new one instead of the guest getting a 503."""
    server = ClosingServer()
    upstream = _upstream_of(server)
    try:
        first = await upstream.forward("GET", "/openstack/latest/meta_data.json", b"", RES)
        assert first.status == 200
        assert server.closed.acquire(timeout=10)  # as above: the loop has not noticed yet
        answer = await upstream.forward("PUT", "/latest/api/token", b"", RES,
                                        "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n")
        assert answer.status == 200
        assert server.requests == [b"GET /openstack/latest/meta_data.json HTTP/1.1",
                                   b"PUT /latest/api/token HTTP/1.1"]
    finally:
        await upstream.close()
        server.stop()
