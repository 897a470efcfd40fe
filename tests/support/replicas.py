"""Two control-api and two metadata-api replicas on a private PostgreSQL, one metadata agent
failing over between them, and a cloud-init-shaped crawl with acknowledged writes (issue 11
item 4). Used by tests/e2e/test_replicas.py and bench/bench_replicas.py.

```
 crawl (asyncio, aiohttp over the agent's unix socket, the headers haproxy would add)
   │  X-Neutron-Network-ID + X-Forwarded-For
   ▼
 metadata-agent  nova_metadata_host = 127.0.0.1,127.0.0.2   auth_url = <ctl-1>,<ctl-2>
   ▼                                   ▼
 metadata-api 127.0.0.1 / 127.0.0.2   control-api 127.0.0.1 / 127.0.0.2   (same ports)
   └───────────────┬──────────────────────┘
           PostgreSQL of its own (tests/pg_private.py: stop -m immediate, start again)
```
No namespace is made and nothing is sent to 169.254.169.254: the crawl speaks to the agent's
socket as the namespace proxy does. Writes: a writer creates networks with unique names
through a control client that lists both control-api replicas; each instance of a round posts
its password once through the agent. What was acknowledged (2xx) is checked afterwards.
Everything started here is stopped by pid in `cleanup()`.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from openimds.control.client import ApiConnectionError, ApiError, ControlClient
from tests.pg_private import PrivatePostgres

REPO = Path(__file__).resolve().parents[2]
ADMIN_PW = "replica-admin-pw"
SECRET = "replica-shared-secret"
HOSTS = ("127.0.0.1", "127.0.0.2")
SUBNET = "10.44.0.0/16"
# cloud-init's OpenStack sequence (22.4.2) and the start of its EC2 crawl.
OPENSTACK = ("/openstack", "/openstack", "/openstack/2018-08-27/meta_data.json",
             "/openstack/2018-08-27/vendor_data.json", "/openstack/2018-08-27/vendor_data2.json",
             "/openstack/2018-08-27/network_data.json", "/openstack/2018-08-27/user_data")
EC2 = ("/2009-04-04/meta-data/", "/2009-04-04/meta-data/instance-id",
       "/2009-04-04/meta-data/local-ipv4", "/2009-04-04/meta-data/hostname",
       "/2009-04-04/meta-data/placement/", "/2009-04-04/meta-data/placement/availability-zone",
       "/2009-04-04/meta-data/public-keys/", "/2009-04-04/meta-data/block-device-mapping/",
       "/2009-04-04/user-data")
CRAWL = OPENSTACK + EC2


def _ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def _unshared_port(taken: set[int]) -> int:
    """A port free on every replica address, chosen below the kernel's ephemeral range. A
    port from bind(("127.0.0.1", 0)) is free only until the socket closes: until a server
    binds it (seconds later, after the migrations) any other process on the machine may get
    the same number from the same call and listen there, and the cloud then talks to a
    stranger (an auth POST answered "404: Not Found" by another aiohttp server). Neither
    bind(0) nor an outgoing connection ever hands out a port below the ephemeral range."""
    import socket

    low, _high = _ephemeral_range()
    while True:
        port = random.randrange(10_000, low)
        if port in taken:
            continue
        try:
            for host in HOSTS:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        taken.add(port)
        return port


def _listener_inodes(host: str, port: int) -> set[str]:
    """Inodes of the TCP sockets listening on host:port (this network namespace)."""
    import socket

    local = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # 0A: TCP_LISTEN
            inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    """Whether process `pid` has one of these socket inodes open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if "proxy" not in k.lower() and not k.startswith("OS_")}
    env["PYTHONPATH"] = str(REPO)
    return env


@dataclass
class Result:
    """One request of the crawl: when it ended, its status (0 = transport error)."""

    t: float
    status: int
    path: str
    address: str = ""  # the instance that asked
    started: float = 0.0  # when it was sent


@dataclass
class Round:
    results: list[Result] = field(default_factory=list)
    acked_networks: list[str] = field(default_factory=list)
    failed_writes: int = 0
    acked_passwords: dict[str, str] = field(default_factory=dict)
    fault_at: float | None = None
    write_outage: float = 0.0  # longest stretch from a failed write's start to the next ack
    acked_at: list[float] = field(default_factory=list)  # when each write was acknowledged

    def write_gap(self) -> float:
        """The longest time without an acknowledged write from the last one before the fault
        (or the fault itself, when none came before) on: a write that stalls without failing
        counts too."""
        if self.fault_at is None:
            return 0.0
        times = sorted(self.acked_at)
        before = [t for t in times if t < self.fault_at]
        points = [before[-1] if before else self.fault_at] + [
            t for t in times if t >= self.fault_at]
        return max((b - a for a, b in zip(points, points[1:], strict=False)), default=0.0)

    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status not in (200, 404)]

    def outage(self) -> float:
        """Seconds from the first failed request after the fault to the next good one."""
        if self.fault_at is None:
            return 0.0
        ordered = sorted(self.results, key=lambda r: r.t)
        bad = next((r.t for r in ordered if r.t >= self.fault_at
                    and r.status not in (200, 404)), None)
        if bad is None:
            return 0.0
        good = next((r.t for r in ordered if r.t > bad and r.status == 200), None)
        return (good - bad) if good is not None else float("inf")

    def failure_window(self) -> float:
        """Seconds from the first to the last failed request of the round (0: none failed)."""
        bad = [r.t for r in self.results if r.status not in (200, 404)]
        return max(bad) - min(bad) if bad else 0.0

    def guest_outage(self) -> float:
        """The longest any one instance waited: from sending one of its failed requests to its
        next good answer (inf when it never got one)."""
        worst = 0.0
        by_address: dict[str, list[Result]] = {}
        for r in self.results:
            by_address.setdefault(r.address, []).append(r)
        for results in by_address.values():
            results.sort(key=lambda r: r.t)
            bad: float | None = None
            for r in results:
                if r.status not in (200, 404):
                    bad = r.started if bad is None else bad
                elif bad is not None and r.status == 200:
                    worst = max(worst, r.t - bad)
                    bad = None
            if bad is not None:
                return float("inf")
        return worst


class ReplicaCloud:
    """See the module docstring."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="oit-replicas-", dir="/tmp"))
        self.pg: PrivatePostgres | None = None
        taken: set[int] = set()
        self.api_port = _unshared_port(taken)
        self.md_port = _unshared_port(taken)
        self.metrics_port = _unshared_port(taken)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Any] = []
        self.socket = str(self.root / "metadata_proxy")
        self.instances: list[tuple[str, str]] = []  # (address, uuid)
        self.network_id = ""

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.pg = PrivatePostgres()
        for i, host in enumerate(HOSTS, start=1):
            (self.root / f"server-{i}.conf").write_text(
                f"[DEFAULT]\nstate_path = {self.root}\nbind_host = {host}\n"
                f"bind_port = {self.api_port}\nmetadata_listen = {host}\n"
                f"metadata_listen_port = {self.md_port}\nmetadata_workers = 1\n"
                f"metrics_listen = {host}\nmetrics_listen_port = {self.metrics_port}\n"
                f"[database]\nconnection = {self.pg.url}\n"
                f"[neutron]\nservice_metadata_proxy = true\n"
                f"metadata_proxy_shared_secret = {SECRET}\n")
        (self.root / "agent.ini").write_text(
            f"[DEFAULT]\nauth_url = {self.auth_urls}\nadmin_user = admin\n"
            f"admin_password = {ADMIN_PW}\nadmin_tenant_name = admin\n"
            f"nova_metadata_host = {','.join(HOSTS)}\nnova_metadata_port = {self.md_port}\n"
            f"metadata_proxy_shared_secret = {SECRET}\nmetadata_proxy_socket = {self.socket}\n"
            "metadata_workers = 1\n[metadata_rate_limiting]\n"
            "instance_rate_limit_enabled = false\n")
        conf = str(self.root / "server-1.conf")
        self._run("db", "upgrade", "--config-file", conf)
        self._run("bootstrap", "--admin-password", ADMIN_PW, "--config-file", conf)
        for i in (1, 2):
            self.start_service(f"control-api-{i}")
            self.start_service(f"metadata-api-{i}")
        self.start_service("metadata-agent")
        for name in self.procs:
            self.wait_listening(name)

    def _address(self, name: str) -> tuple[str, int] | str:
        if name == "metadata-agent":
            return self.socket
        host = HOSTS[int(name[-1]) - 1]
        return (host, self.api_port if name.startswith("control") else self.md_port)

    def wait_listening(self, name: str, timeout: float = 60) -> None:
        """Until the service itself listens (it exits: its log in the error). On TCP that is
        its own listening socket, not merely a connection accepted on its address: another
        process holding the port would accept too."""
        import socket

        address = self._address(name)
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(address, str):  # a unix socket in our private directory
                with socket.socket(socket.AF_UNIX) as s:
                    try:
                        s.connect(address)
                        return
                    except OSError:
                        pass
            elif _holds_socket(proc.pid, _listener_inodes(*address)):
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} is not listening on {address}: "
                                     f"{self.log_text(name)[-2000:]}")
            time.sleep(0.1)

    @property
    def auth_urls(self) -> str:
        return ",".join(f"http://{h}:{self.api_port}/v2.0" for h in HOSTS)

    def _run(self, *args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "openimds", *args], capture_output=True,
                              text=True, env=_env(), timeout=120)
        assert proc.returncode == 0, proc.stderr

    def start_service(self, name: str) -> None:
        """control-api-N / metadata-api-N (replica N) or metadata-agent."""
        service, _, n = name.rpartition("-") if name != "metadata-agent" else (name, "", "")
        conf = self.root / ("agent.ini" if name == "metadata-agent" else f"server-{n}.conf")
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in cleanup
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "openimds", service, "--config-file", str(conf)],
            stdout=log, stderr=subprocess.STDOUT, env=_env())

    def kill(self, name: str) -> None:
        """kill -9 of one process we started."""
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart_postgres(self) -> None:
        assert self.pg is not None
        self.pg.stop()  # -m immediate: connections cut as in a crash
        self.pg.start()

    def postgres_started_at(self) -> str:
        import psycopg
        from sqlalchemy.engine import make_url

        assert self.pg is not None
        url = make_url(self.pg.url).set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()
        assert row is not None
        return str(row[0])

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
        if self.pg is not None:
            self.pg.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    # ---- inventory -------------------------------------------------------------------------
    def client(self) -> ControlClient:
        return ControlClient(self.auth_urls, "admin", ADMIN_PW, "admin")

    async def build(self, count: int) -> None:
        """One network with `count` servers; fills `instances`."""
        async with self.client() as api:
            net = await api.create("networks", {"name": "replicas"})
            await api.create("subnets", {"network_id": net["id"], "cidr": SUBNET,
                                         "ip_version": 4, "gateway_ip": None})
            self.network_id = net["id"]
            # One at a time: concurrent creates on one subnet can meet 409 IpAddressInUse on
            # PostgreSQL (two transactions pick the same free address; the loser is refused).
            sem = asyncio.Semaphore(1)

            async def server(i: int) -> tuple[str, str]:
                async with sem:
                    body = {"server": {"name": f"vm-{i}", "networks": [{"uuid": net["id"]}]}}
                    created = (await api.request("POST", "compute", "/servers", body))["server"]
                    ports = await api.list("ports", device_id=created["id"])
                    return ports[0]["fixed_ips"][0]["ip_address"], created["id"]

            self.instances = list(await asyncio.gather(*(server(i) for i in range(count))))

    # ---- the crawl ---------------------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket, limit=0),
                                     timeout=aiohttp.ClientTimeout(total=35))

    async def ask(self, session: aiohttp.ClientSession, address: str, path: str,
                  method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
        headers = {"X-Neutron-Network-ID": self.network_id, "X-Forwarded-For": address}
        try:
            async with session.request(method, f"http://agent{path}", headers=headers,
                                       data=body or None) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return 0, b""

    async def ready(self) -> bool:
        """The agent answers the first and the last instance."""
        async with self._session() as session:
            for address, uid in (self.instances[0], self.instances[-1]):
                status, body = await self.ask(session, address,
                                              "/openstack/latest/meta_data.json")
                if status != 200 or uid.encode() not in body:
                    return False
        return True

    async def crawl(self, instances: Sequence[tuple[str, str]], round_no: int,
                    rounds: int, out: Round, until: asyncio.Event,
                    posted: asyncio.Event | None = None) -> None:
        """Every instance runs CRAWL, again and again until `until` is set; those with
        index % rounds == round_no post their password after their first pass (each instance
        once in its life). `posted` is set once every password POST of the round was
        answered."""
        posters = sum(1 for i in range(len(instances)) if i % rounds == round_no)
        answered = 0
        if posted is not None and posters == 0:
            posted.set()
        async with self._session() as session:
            async def one(i: int, address: str, uid: str) -> None:
                nonlocal answered
                await crawl_once(address, uid)
                if i % rounds == round_no:
                    pw = f"pw-{uid}"
                    sent = time.monotonic()
                    status, _ = await self.ask(session, address, "/openstack/latest/password",
                                               "POST", pw.encode())
                    out.results.append(Result(time.monotonic(), status, "POST password",
                                              address, sent))
                    if status == 200:
                        out.acked_passwords[address] = pw
                    answered += 1
                    if posted is not None and answered == posters:
                        posted.set()
                while not until.is_set():
                    await crawl_once(address, uid)

            async def crawl_once(address: str, uid: str) -> None:
                for path in CRAWL:
                    sent = time.monotonic()
                    status, body = await self.ask(session, address, path)
                    out.results.append(Result(time.monotonic(), status, path, address, sent))
                    if path.endswith("meta_data.json") and status == 200:
                        assert uid.encode() in body, f"{address} got another instance's data"

            await asyncio.gather(*(one(i, a, u) for i, (a, u) in enumerate(instances)))

    async def writer(self, stop: asyncio.Event, out: Round, tag: str) -> None:
        """Create networks named `<tag>-<n>` back to back until `stop`; record the acked."""
        n = 0
        down_since: float | None = None
        async with self.client() as api:
            while not stop.is_set():
                name = f"{tag}-{n}"
                n += 1
                sent = time.monotonic()
                try:
                    await api.create("networks", {"name": name})
                except (ApiError, ApiConnectionError):
                    out.failed_writes += 1
                    down_since = sent if down_since is None else down_since
                    await asyncio.sleep(0.1)
                else:
                    out.acked_networks.append(name)
                    out.acked_at.append(time.monotonic())
                    if down_since is not None:
                        out.write_outage = max(out.write_outage,
                                               time.monotonic() - down_since)
                        down_since = None
                await asyncio.sleep(0.02)

    async def lost_writes(self, rounds: Sequence[Round]) -> list[str]:
        """Acknowledged writes that are not in the database (plus networks written twice)."""
        async with self.client() as api:
            names = [n["name"] for n in await api.list("networks")]
        lost = [n for r in rounds for n in r.acked_networks if n not in names]
        lost += [f"{n} (twice)" for n in set(names) if names.count(n) > 1]
        async with self._session() as session:
            for r in rounds:
                for address, pw in r.acked_passwords.items():
                    status, body = await self.ask(session, address,
                                                  "/openstack/latest/password")
                    if status != 200 or body.decode() != pw:
                        lost.append(f"password of {address} ({status})")
        return lost


FAULTS = ("none", "control-api", "metadata-api", "postgresql")


async def run_faults(cloud: ReplicaCloud, kill_after: float = 0.3,
                     settle: float = 3.0) -> dict[str, Round]:
    """Per fault (none, kill -9 of control-api-1, of metadata-api-1, a PostgreSQL restart) a
    round: every instance crawls from the start until `settle` seconds after the fault was
    done, the writer running throughout; the killed replica is started again after its
    round.

    A replica is killed `kill_after` seconds into its round and not before the round's
    password POSTs were answered: a POST that a replica holds when it is killed may have
    been written, so the agent must not send it again and answers 503 (a write is never
    made twice). The crawl's GETs, and the writer, keep running across the kill."""
    rounds: dict[str, Round] = {}
    for no, fault in enumerate(FAULTS):
        out = Round()
        stop = asyncio.Event()
        writer = asyncio.create_task(cloud.writer(stop, out, f"ack-{fault}"))
        posted = asyncio.Event()

        async def inject(fault: str = fault, out: Round = out,
                         posted: asyncio.Event = posted) -> None:
            await asyncio.sleep(kill_after)
            if fault in ("control-api", "metadata-api"):
                await posted.wait()
            out.fault_at = time.monotonic()
            if fault == "postgresql":
                await asyncio.to_thread(cloud.restart_postgres)
            elif fault != "none":
                await asyncio.to_thread(cloud.kill, f"{fault}-1")

        until = asyncio.Event()
        injector = asyncio.create_task(inject())
        injector.add_done_callback(
            lambda _t, ev=until: asyncio.get_running_loop().call_later(settle, ev.set))
        await cloud.crawl(cloud.instances, no, len(FAULTS), out, until, posted)
        await injector
        stop.set()
        await writer
        rounds[fault] = out
        if fault in ("control-api", "metadata-api"):
            cloud.start_service(f"{fault}-1")
            await asyncio.to_thread(cloud.wait_listening, f"{fault}-1")
    return rounds
