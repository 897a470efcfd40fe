"""Shared harness of the namespace benchmarks (bench_chain, bench_network_scale, bench_boot_storm).

Not a test. `Node` is the suite's node harness (tests/support/node.py `AllInOneNode`, also
under tests/e2e/cloud.py): a real `openimds all-in-one` with a fabric namespace
`bench-fab-<hex>`; client namespaces are `bench-c-<hex>`; the qdhcp-/qrouter- namespaces are
those of the uuid4 networks the benchmark creates. `Node.cleanup()` stops all-in-one by pid,
kills only processes inside those namespaces (found through /proc, like `ip netns pids`) or
naming its state directory, deletes the namespaces and the state directory. It runs from
`finally`, and SIGTERM/SIGHUP are turned into KeyboardInterrupt so that `finally` also runs
when the run is stopped. What is here is the benchmarks' own: the measuring (CPU, Pss, the
neighbour table, wrk) and the namespace client.

Requests to 169.254.169.254 are only ever made from inside client namespaces:
* wrk runs under `ip netns exec <client ns>`;
* `NsClient` is this file run as `python bench/_harness.py client` under `ip netns exec` of a
  client namespace. It makes every socket inside the namespace it is told to use, by setns(2)
  of its one thread before socket(2), and checks the thread's namespace inode afterwards; it
  refuses any namespace whose name is not a benchmark client namespace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import node as _node  # noqa: E402
from tests.support.node import (  # noqa: E402
    AllInOneNode,
    clean_env,
    enter_private_netns_dir,
    free_port,
    kill_and_delete,
    netns_inode,
    netns_pids,
    processes_by_netns,
    sh,
)

__all__ = [
    "CLIENT_PREFIX", "MD_ADDR", "CpuMeter", "Node", "NsClient", "WrkResult", "clean_env",
    "cpu_seconds", "enter_private_netns_dir", "free_port", "install_stop_handlers",
    "kill_and_delete", "neighbour_table", "netns_inode", "netns_pids", "ns_pss_kb",
    "percentile", "processes_by_netns", "pss_kb", "run_wrk", "sh", "slope", "verdict",
    "wait_for",
]
MD_ADDR = "169.254.169.254"
CLIENT_PREFIX = "bench-c-"
CLIENT_SCRIPT = Path(__file__).resolve()
USER_AGENT = "Cloud-Init/22.4.2"


# ---- small helpers ---------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """The harness's poll, with the benchmarks' longer default timeout."""
    return _node.wait_for(check, timeout=timeout, interval=interval)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (the marginal cost per unit of x)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def install_stop_handlers() -> None:
    """SIGTERM/SIGHUP raise KeyboardInterrupt, so every `finally` cleanup runs as on Ctrl-C."""

    def _raise(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


# ---- namespaces and processes ----------------------------------------------------------------


def _haproxy_argvs() -> list[tuple[int, list[bytes]]]:
    """(pid, argv) of every live haproxy (one /proc scan)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"haproxy"):
            out.append((int(entry.name), argv))
    return out


def pss_kb(pid: int) -> int:
    """Pss of one process in kB (smaps_rollup); 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def ns_pss_kb(names: Iterable[str], comms: Sequence[str]) -> tuple[int, int]:
    """(sum of Pss in kB, number of processes) of the processes named `comms` in `names`.

    Pss divides every shared page among the processes mapping it, so the sum over all copies
    is the real memory they take together; its growth per namespace is the marginal cost."""
    table = processes_by_netns()
    total = count = 0
    for name in names:
        ino = netns_inode(name)
        for pid, comm in table.get(ino, []) if ino is not None else []:
            if comm in comms:
                total += pss_kb(pid)
                count += 1
    return total, count


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the given processes and all their live descendants, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    roots = set(pids)
    total = 0.0
    for pid in cpu:
        p = pid
        while p > 1 and p not in roots:
            p = parents.get(p, 0)
        if p in roots:
            total += cpu[pid]
    return total


def neighbour_table() -> dict[str, int]:
    """The kernel's IPv4 neighbour table, which all network namespaces share: entries now, the
    sum over CPUs of `table_fulls` (an allocation refused at gc_thresh3: the packet that needed
    it is dropped and the guest waits for a retransmission), and the host's gc_thresh3 (only
    the initial namespace has that sysctl: read, never written here)."""
    lines = Path("/proc/net/stat/arp_cache").read_text().split("\n")
    head = lines[0].split()
    rows = [dict(zip(head, (int(x, 16) for x in ln.split()), strict=True))
            for ln in lines[1:] if ln.strip()]
    thresh = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
    return {"entries": rows[0]["entries"] if rows else 0,
            "table_fulls": sum(r["table_fulls"] for r in rows),
            "gc_thresh3": int(thresh.read_text()) if thresh.exists() else -1}


class CpuMeter:
    """CPU seconds used by named groups of processes between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> None:
        self.before = {k: cpu_seconds(f()) for k, f in self.groups.items()}
        self.wall = time.monotonic()

    def stop(self) -> None:
        self.wall = time.monotonic() - self.wall
        self.used = {k: cpu_seconds(f()) - self.before[k] for k, f in self.groups.items()}

    def report(self, requests: int) -> str:
        parts = [f"{k} {v:.1f}s ({v / self.wall:.0%} of a core, "
                 f"{v / max(1, requests) * 1e6:.0f} us/req)" for k, v in self.used.items()]
        return f"CPU over {self.wall:.1f}s: " + "; ".join(parts)


# ---- the node --------------------------------------------------------------------------------


class Node(AllInOneNode):
    """One `openimds all-in-one` node plus client namespaces on its fabric."""

    def __init__(self, *, extra_conf: str = "", lease_duration: int = 86400) -> None:
        super().__init__(prefix="bench", ns_prefix="bench", conf_name="bench.conf",
                         lease_duration=lease_duration, conf_tail=extra_conf)
        self.clients: list[str] = []
        self.network_ids: set[str] = set()
        self.router_ids: set[str] = set()
        self.password = ""

    # lifecycle
    def ready(self) -> bool:
        """The control API answers an authenticated listing."""
        self.password = self.openrc.get("OS_PASSWORD", "")
        try:
            asyncio.run(self._probe())
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def start(self, timeout: float = 90) -> None:
        super().start(timeout)
        wait_for(lambda: netns_inode(self.fabric) is not None, timeout=60)

    def namespace_names(self) -> list[str]:
        ids = sorted(self.network_ids | self.router_ids)
        return [f"{kind}-{rid}" for rid in ids for kind in ("qdhcp", "qrouter")] + \
            super().namespace_names()

    async def _probe(self) -> None:
        async with self.api() as api:
            await api.list("networks")

    def api(self) -> Any:
        from openimds.control.client import ControlClient

        return ControlClient(f"http://127.0.0.1:{self.api_port}/v3", "admin", self.password,
                             "admin")

    def service_pids(self, service: str) -> list[int]:
        pid = self.child_pid(service)
        return [pid] if pid is not None else []

    def proxy_pids(self) -> list[int]:
        """haproxy processes of the node's networks: found by their config path, which names
        the network, so also in map mode (haproxy then runs outside the qdhcp namespace and
        only listens in it)."""
        confs = {f"{self.state}/ns-metadata-proxy/{n}.conf".encode() for n in self.network_ids}
        return [pid for pid, argv in _haproxy_argvs() if confs & set(argv)]

    def proxy_running(self, network_id: str) -> bool:
        conf = f"{self.state}/ns-metadata-proxy/{network_id}.conf".encode()
        return any(conf in argv for _, argv in _haproxy_argvs())

    def api_cache_counts(self) -> dict[tuple[str, str], float]:
        """The metadata API's cache counters ((cache, result) -> count) from its /metrics
        listener on loopback; empty when it does not answer."""
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            text = opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics",
                               timeout=10).read().decode()
        except OSError:
            return {}
        out: dict[tuple[str, str], float] = {}
        for m in re.finditer(r'^openimds_metadata_cache_total\{cache="(\w+)",result="(\w+)"\}'
                             r" (\S+)$", text, re.M):
            out[(m.group(1), m.group(2))] = float(m.group(3))
        return out

    def cpu_meter(self, **extra: Callable[[], list[int]]) -> CpuMeter:
        return CpuMeter({
            "haproxy": self.proxy_pids,
            "agent": lambda: self.service_pids("metadata-agent"),
            "api": lambda: self.service_pids("metadata-api"),
            **extra,
        })

    # inventory helpers (async: one ControlClient per benchmark phase)
    async def create_network(self, api: Any, name: str, cidr: str, *, gateway: bool = False,
                             pool: tuple[str, str] | None = None) -> tuple[str, str]:
        """An isolated network with one DHCP subnet; returns (network id, subnet id)."""
        net = await api.create("networks", {"name": name})
        self.network_ids.add(net["id"])  # recorded at once: cleanup must know it
        body: dict[str, Any] = {"network_id": net["id"], "cidr": cidr, "ip_version": 4,
                                "name": name + "-sub", "enable_dhcp": True}
        if not gateway:
            body["gateway_ip"] = None
        if pool:
            body["allocation_pools"] = [{"start": pool[0], "end": pool[1]}]
        sub = await api.create("subnets", body)
        return net["id"], sub["id"]

    async def dhcp_ip(self, api: Any, network_id: str) -> str:
        ports = await api.list("ports", network_id=network_id, device_owner="network:dhcp")
        if not ports:
            raise RuntimeError(f"no DHCP port on {network_id}")
        return str(ports[0]["fixed_ips"][0]["ip_address"])

    def network_ready(self, network_id: str, table: dict[int, list[tuple[int, str]]]) -> bool:
        """qdhcp-<id> exists and holds a dnsmasq and a haproxy."""
        ino = netns_inode(f"qdhcp-{network_id}")
        comms = {comm for _, comm in table.get(ino, [])} if ino is not None else set()
        return "dnsmasq" in comms and ("haproxy" in comms or self.proxy_running(network_id))

    def network_gone(self, network_id: str) -> bool:
        return netns_inode(f"qdhcp-{network_id}") is None

    # client namespaces
    def client_ns(self, network_id: str, port: dict[str, Any], addresses: Sequence[str],
                  prefixlen: int, route_via: str) -> str:
        """A client namespace plugged into the fabric with `port` (its MAC), holding every
        address in `addresses` on eth0, with 169.254.169.254 routed via the DHCP port (what
        option 121 gives a guest; set statically so DHCP timing stays out of the figures)."""
        from openimds.linux.fabric import plug_port

        # One namespace speaks for many instances from one port: port security would drop
        # every address that is not this port's own, so the others become allowed pairs.
        own = {f["ip_address"] for f in port.get("fixed_ips") or ()}
        extra = sorted(set(addresses) - own)
        if extra:
            self._allow_pairs(port["id"], extra)
        ns = f"{CLIENT_PREFIX}{uuid.uuid4().hex[:8]}"
        self.clients.append(ns)
        self.namespaces.append(ns)  # before creation: a half-made namespace is still cleaned up
        plug_port(self.fabric, network_id, port["id"], port["mac_address"], ns)
        batch = "".join(f"addr add {a}/{prefixlen} dev eth0\n" for a in addresses)
        batch += f"route replace {MD_ADDR}/32 via {route_via} dev eth0\n"
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True,
                       capture_output=True)
        sh("ip", "link", "set", "lo", "up", netns=ns)
        return ns


    def pin_neighbours(self, network_id: str, dhcp_ip: str, addresses: Sequence[str],
                       mac: str) -> int:
        """Permanent neighbour entries for `addresses` -> `mac` in the network's proxy
        namespace (`qdhcp-<network>`, the bench's own: deleted with it). Permanent entries are
        exempt from the kernel's gc_thresh3, which is one limit for every namespace of the
        host and settable only from the host's own namespace (docs/dhcp-l3.md): this stands
        in for the operator's sysctl without touching the host. Returns how many."""
        ns = f"qdhcp-{network_id}"
        dev = next(line.split()[1] for line in sh("ip", "-o", "-4", "addr", "show",
                                                  netns=ns).splitlines()
                   if f" {dhcp_ip}/" in line)
        batch = "".join(f"neigh replace {a} lladdr {mac} dev {dev} nud permanent\n"
                        for a in addresses)
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True,
                       capture_output=True)
        return len(addresses)

    def _allow_pairs(self, port_id: str, addresses: Sequence[str]) -> None:
        async def put() -> None:
            async with self.api() as api:
                await api.update("ports", port_id, {"allowed_address_pairs": [
                    {"ip_address": a} for a in addresses]})

        # Callable from sync code that may sit inside a running loop: its own thread and loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, put()).result()


# ---- wrk inside a namespace ------------------------------------------------------------------


@dataclass
class WrkResult:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    socket_errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(name: str, netns: str, url: str, *, threads: int, connections: int,
            duration: int, headers: Sequence[str] = ()) -> WrkResult:
    """wrk inside `netns` (the only place from which 169.254.169.254 may be reached)."""
    cmd = ["ip", "netns", "exec", netns, "wrk", f"-t{threads}", f"-c{connections}",
           f"-d{duration}s", "--latency", "--timeout", "10s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, env=clean_env(),
                         check=True, timeout=duration + 60).stdout

    def grab(pattern: str) -> str:
        m = re.search(pattern, out, re.M)
        if not m:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return m.group(1)

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        name=name,
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(grab(r"^\s+50%\s+(\S+)")),
        p99_ms=_ms(grab(r"^\s+99%\s+(\S+)")),
        requests=int(grab(r"(\d+) requests in")),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


# ---- the in-namespace client (controller side) -----------------------------------------------


class NsClient:
    """Drives `python bench/_harness.py client` running inside client namespace `home`.

    One JSON request per line on its stdin, one JSON answer per line on its stdout."""

    def __init__(self, home: str, node: Node) -> None:
        if not home.startswith(CLIENT_PREFIX):
            raise ValueError(home)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", home, sys.executable, str(CLIENT_SCRIPT), "client",
             str(os.stat("/proc/self/ns/net").st_ino)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=clean_env(), text=True,
        )
        node.extra_pids.append(self.proc.pid)

    def call(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the namespace client died")
        answer = dict(json.loads(line))
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- the in-namespace client (the process itself) --------------------------------------------

CLONE_NEWNET = 0x40000000
OPENSTACK_FILES = ("meta_data.json", "user_data", "vendor_data.json", "vendor_data2.json",
                   "network_data.json")
OPENSTACK_VERSIONS = ("2018-08-27", "2017-02-22", "2016-10-06", "2016-06-30", "2015-10-15",
                      "2013-10-17", "2013-04-04", "2012-08-10")


class _Netns:
    """setns(2) of this (single) thread into client namespaces, checked by inode."""

    def __init__(self, host_ino: int) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fds: dict[str, int] = {}
        self.current = os.stat("/proc/thread-self/ns/net").st_ino
        self.host = host_ino

    def enter(self, name: str) -> None:
        if not name.startswith(CLIENT_PREFIX) or "/" in name:
            raise ValueError(f"not a benchmark client namespace: {name}")
        want = os.stat(f"/run/netns/{name}").st_ino
        if want == self.current:
            return
        if want == self.host:
            raise RuntimeError(f"{name} is the host namespace")
        fd = self.fds.get(name)
        if fd is None:
            fd = self.fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY)
        if self.libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        got = os.stat("/proc/thread-self/ns/net").st_ino
        if got != want:
            raise RuntimeError(f"setns {name}: landed in {got}")
        self.current = got


class _Sockets:
    """TCP sockets born in client namespaces, made a batch at a time: one setns(2) (and its
    inode check) per batch instead of per socket. No await runs between a setns and the
    socket(2) calls that follow it, so every socket of a batch is born in that namespace."""

    BATCH = 16

    def __init__(self, netns: _Netns) -> None:
        self.netns = netns
        self.pools: dict[str, list[socket.socket]] = {}

    def take(self, ns: str) -> socket.socket:
        pool = self.pools.get(ns)
        if not pool:
            self.netns.enter(ns)
            pool = self.pools[ns] = []
            for _ in range(self.BATCH):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                pool.append(sock)
        return pool.pop()


class _Get(asyncio.Protocol):
    """One request written on connect, its response collected until complete."""

    def __init__(self, request: bytes, done: asyncio.Future[tuple[int, bytes]]) -> None:
        self.request = request
        self.done = done
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._check(eof=False)

    def eof_received(self) -> bool:
        self._check(eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or asyncio.IncompleteReadError(bytes(self.buf), None))

    def _check(self, *, eof: bool) -> None:
        if self.done.done():
            return
        try:
            got = _parse_response(self.buf, eof)
        except ValueError as exc:
            self.done.set_exception(exc)
            return
        if got is not None:
            self.done.set_result(got)


_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked")


def _parse_response(buf: bytearray, eof: bool) -> tuple[int, bytes] | None:
    """(status, body) once `buf` holds a whole response; None while it does not (yet)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if eof:
            raise ValueError(f"no response head: {bytes(buf[:80])!r}")
        return None
    head = bytes(buf[:end]).lower()
    status = int(head.split(b" ", 2)[1])
    start = end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(buf) >= start + length:
            return status, bytes(buf[start : start + length])
    elif _CHUNKED.search(head):
        body = bytearray()
        at = start
        while True:
            line_end = buf.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(bytes(buf[at:line_end]).split(b";")[0], 16)
            if len(buf) < line_end + 2 + size + 2:
                break
            if size == 0:
                return status, bytes(body)
            body += buf[line_end + 2 : line_end + 2 + size]
            at = line_end + 2 + size + 2
    elif eof:
        return status, bytes(buf[start:])
    if eof:
        raise ValueError(f"response cut short after {len(buf)} bytes")
    return None


class _Http:
    """One GET per new TCP connection, like cloud-init (a new requests.Session each time).

    Lean on purpose (it shares the cores with what it measures): sockets made in batches per
    namespace (`_Sockets`), request bytes built once per path, a protocol instead of streams,
    one timer per request; the checks are the callers' (status, uuid, local-ipv4)."""

    def __init__(self, timeout: float, host_ino: int) -> None:
        self.sockets = _Sockets(_Netns(host_ino))
        self.timeout = timeout
        self.requests: dict[str, bytes] = {}

    def _request(self, path: str) -> bytes:
        req = self.requests.get(path)
        if req is None:
            req = self.requests[path] = (
                f"GET {path} HTTP/1.1\r\nHost: {MD_ADDR}\r\nUser-Agent: {USER_AGENT}\r\n"
                "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
            ).encode()
        return req

    async def get(self, ns: str, src: str, path: str) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        request = self._request(path)
        sock = self.sockets.take(ns)
        transport = None
        try:
            async with asyncio.timeout(self.timeout):
                sock.bind((src, 0))
                await loop.sock_connect(sock, (MD_ADDR, 80))
                done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
                transport, _ = await loop.create_connection(lambda: _Get(request, done),
                                                            sock=sock)
                return await done
        finally:
            if transport is not None:
                transport.close()
            else:
                sock.close()


async def _poll(http: _Http, req: dict[str, Any]) -> dict[str, Any]:
    """GET meta_data.json until it names `uuid`; report the monotonic time of that answer."""
    deadline = time.monotonic() + float(req.get("timeout", 30))
    tries = 0
    last = ""
    while time.monotonic() < deadline:
        tries += 1
        try:
            status, body = await http.get(req["ns"], req["src"], "/openstack/latest/meta_data.json")
            if status == 200 and json.loads(body).get("uuid") == req["uuid"]:
                return {"ok": True, "t": time.monotonic(), "tries": tries}
            last = f"{status} {body[:100]!r}"
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            last = repr(exc)
        await asyncio.sleep(float(req.get("interval", 0.005)))
    return {"ok": False, "t": time.monotonic(), "tries": tries, "last": last}


class _Instance:
    """cloud-init 22.4.2's OpenStack datasource request sequence for one instance."""

    def __init__(self, http: _Http, ns: str, src: str, uuid_: str, *, ec2: bool = True) -> None:
        self.http, self.ns, self.src, self.uuid = http, ns, src, uuid_
        # cloud-init's OpenStack reader also crawls the EC2 meta-data tree (`--sequence`).
        self.ec2 = ec2
        self.latencies: list[float] = []
        self.slowest: tuple[float, float, str] = (0.0, 0.0, "")  # latency, start, path
        self.failures: list[str] = []
        self.statuses: dict[int, int] = {}  # HTTP status -> count (0 = no answer)

    def _took(self, t0: float, path: str) -> None:
        took = time.monotonic() - t0
        self.latencies.append(took)
        if took > self.slowest[0]:
            self.slowest = (took, t0, path)

    async def get(self, path: str, *, must: bool = True) -> tuple[int, bytes]:
        t0 = time.monotonic()
        try:
            status, body = await self.http.get(self.ns, self.src, path)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self._took(t0, path)
            self.failures.append(f"{self.src} {path}: {exc!r}")
            self.statuses[0] = self.statuses.get(0, 0) + 1
            return 0, b""
        self._took(t0, path)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        # Optional OpenStack files may 404 (cloud-init skips them); anything else must be 200.
        if status != 200 and (must or status != 404):
            self.failures.append(f"{self.src} {path}: HTTP {status} {body[:80]!r}")
        return status, body

    async def run(self) -> None:
        status, body = await self.get("/openstack")  # wait_for_url: 2xx and a non-empty body
        if status != 200 or not body.strip():
            return
        status, body = await self.get("/openstack")  # read_v2 asks again for the versions
        offered = body.decode().split()
        ver = next((v for v in OPENSTACK_VERSIONS if v in offered), "latest")
        for name in OPENSTACK_FILES:
            status, body = await self.get(f"/openstack/{ver}/{name}", must=name == "meta_data.json")
            if name == "meta_data.json" and status == 200:
                meta = json.loads(body)
                if meta.get("uuid") != self.uuid:
                    self.failures.append(f"{self.src}: uuid {meta.get('uuid')} != {self.uuid}")
                for f in meta.get("files", []):
                    if f.get("content_path"):
                        await self.get(f"/openstack{f['content_path']}")
        if self.ec2:
            await self.crawl("/latest/meta-data/")

    async def crawl(self, url: str) -> None:
        """MetadataMaterializer: directories first (depth first), then leaves, listing order."""
        status, body = await self.get(url)
        if status != 200:
            return
        dirs, leaves = [], []
        for line in body.decode().splitlines():
            line = line.strip()
            if not line:
                continue
            if line.endswith("/"):
                if line.rstrip("/") != "security-credentials":
                    dirs.append(line)
            elif "=" in line:
                leaves.append(line.split("=", 1)[0] + "/openssh-key")
            elif line != "security-credentials":
                leaves.append(line)
        for d in dirs:
            await self.crawl(url + d)
        for leaf in leaves:
            status, body = await self.get(url + leaf)
            if url == "/latest/meta-data/" and leaf == "local-ipv4" and status == 200 \
                    and body.decode() != self.src:
                self.failures.append(f"{self.src}: local-ipv4 {body.decode()}")


async def _storm(http: _Http, req: dict[str, Any]) -> dict[str, Any]:
    ec2 = {"openstack": False, "openstack+ec2": True}[req.get("sequence", "openstack+ec2")]
    instances = [_Instance(http, i["ns"], i["src"], i["uuid"], ec2=ec2)
                 for i in req["instances"]]
    t0 = time.monotonic()
    await asyncio.gather(*(inst.run() for inst in instances))
    total = time.monotonic() - t0
    lat = [x for inst in instances for x in inst.latencies]
    failures = [f for inst in instances for f in inst.failures]
    per_instance = [sum(inst.latencies) for inst in instances]
    statuses: dict[str, int] = {}
    for inst in instances:
        for code, count in inst.statuses.items():
            statuses[str(code)] = statuses.get(str(code), 0) + count
    first = [inst.latencies[0] for inst in instances if inst.latencies]
    slowest = sorted((inst.slowest for inst in instances), reverse=True)[:5]
    return {
        "statuses": statuses,
        "first_p99_ms": percentile(first, 99) * 1000,
        "first_max_ms": max(first) * 1000 if first else float("nan"),
        "slowest": [f"{took * 1000:.0f} ms {path} (sent at {start - t0:.1f} s)"
                    for took, start, path in slowest],
        "total_s": total,
        "requests": len(lat),
        "failed": len(failures),
        "failures": failures[:20],
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "instance_p50_s": percentile(per_instance, 50),
        "instance_max_s": max(per_instance) if per_instance else float("nan"),
        "requests_per_instance": len(lat) / max(1, len(instances)),
    }


async def _client_main(host_ino: int) -> None:
    http = _Http(timeout=30, host_ino=host_ino)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        req = json.loads(line)
        try:
            if req["op"] == "poll":
                answer = await _poll(http, req)
            elif req["op"] == "storm":
                answer = await _storm(http, req)
            elif req["op"] == "get":
                status, body = await http.get(req["ns"], req["src"], req["path"])
                answer = {"status": status, "body": body.decode("utf-8", "replace")}
            else:
                answer = {"error": f"unknown op {req['op']}"}
        except Exception as exc:  # noqa: BLE001 - reported to the controller
            answer = {"error": repr(exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "client":
        raise SystemExit("usage: ip netns exec bench-c-<hex> python bench/_harness.py client "
                         "<netns inode of the host>")
    # Refuse to run in the namespace the controller runs in (the host's).
    host = int(sys.argv[2])
    if os.stat("/proc/self/ns/net").st_ino == host:
        raise SystemExit("the namespace client must run inside a client namespace")
    try:
        import uvloop
    except ImportError:
        asyncio.run(_client_main(host))
    else:  # the leaner loop: the client shares the cores with what it measures
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_client_main(host))
