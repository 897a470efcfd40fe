"""Count frames on a lab's underlay with an AF_PACKET socket (stdlib; no tcpdump needed).

`UnderlayCapture` runs this module as a child inside the underlay namespace, listening on
every device there unless told which (a bridge's own device would not see the unicast frames
it forwards between its ports: the socket is not bound, so each host's veth is heard, the
VXLAN carrier `ul` and physnet1 `ph` alike; a forwarded frame counts twice). Every frame is
decoded down to the tenant frame it carries (802.1Q tags stripped, VXLAN on UDP 4789
unwrapped), and the child counts, per watched MAC, the frames with that MAC as source or
destination at any layer, and the frames (or ARP requests) whose IPv4 target is a watched
address. `stop()` ends the child with SIGTERM and returns the counts.

A capture that sees nothing proves nothing: tests watch a MAC that must cross (a guest talking
to a guest on another host) next to the one that must not, so the capture is shown to work.
`tenant_frame` and `match` are pure and unit-tested without root.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ETH_P_ALL = 0x0003
ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_VLAN = (0x8100, 0x88A8)
VXLAN_PORT = 4789


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ipv4(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


@dataclass(frozen=True)
class Layer:
    src: str
    dst: str
    ethertype: int
    payload: bytes


def _eth(frame: bytes) -> Layer | None:
    if len(frame) < 14:
        return None
    dst, src = _mac(frame[0:6]), _mac(frame[6:12])
    (etype,) = struct.unpack("!H", frame[12:14])
    rest = frame[14:]
    while etype in ETH_VLAN and len(rest) >= 4:
        (etype,) = struct.unpack("!H", rest[2:4])
        rest = rest[4:]
    return Layer(src, dst, etype, rest)


def tenant_frame(frame: bytes) -> list[Layer]:
    """The Ethernet layers of one underlay frame, outermost first (VXLAN unwrapped)."""
    out: list[Layer] = []
    while (layer := _eth(frame)) is not None:
        out.append(layer)
        p = layer.payload
        if layer.ethertype != ETH_IP or len(p) < 20 or p[9] != 17:  # not UDP over IPv4
            break
        ihl = (p[0] & 0x0F) * 4
        udp = p[ihl:]
        if len(udp) < 16 or struct.unpack("!H", udp[2:4])[0] != VXLAN_PORT:
            break
        frame = udp[16:]  # UDP header (8) + VXLAN header (8)
    return out


def match(frame: bytes, macs: Iterable[str], ips: Iterable[str]) -> set[str]:
    """Which watched MACs and IPv4 targets this frame carries, at any layer."""
    macs, ips = {m.lower() for m in macs}, set(ips)
    hits: set[str] = set()
    for layer in tenant_frame(frame):
        hits |= {layer.src, layer.dst} & macs
        p = layer.payload
        if layer.ethertype == ETH_IP and len(p) >= 20:
            hits |= {_ipv4(p[16:20])} & ips
        elif layer.ethertype == ETH_ARP and len(p) >= 28:
            hits |= {_mac(p[8:14]), _mac(p[18:24])} & macs
            hits |= {_ipv4(p[24:28])} & ips
    return hits


def _run(interfaces: Sequence[str], macs: Sequence[str], ips: Sequence[str]) -> None:
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    socks = []
    for name in interfaces or [None]:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        if name is not None:
            s.bind((name, 0))
        s.setblocking(False)
        socks.append(s)
    counts: Counter[str] = Counter()
    print("ready", flush=True)
    while not stop:
        try:
            readable, _, _ = select.select(socks, [], [], 0.2)
        except InterruptedError:
            continue
        for s in readable:
            while True:
                try:
                    frame = s.recv(65535)
                except BlockingIOError:
                    break
                counts["frames"] += 1
                for hit in match(frame, macs, ips):
                    counts[hit] += 1
    print(json.dumps(dict(counts)), flush=True)


class UnderlayCapture:
    """A capture child in namespace `netns` on `interfaces` (none: all), started here."""

    def __init__(self, netns: str, macs: Sequence[str], ips: Sequence[str],
                 interfaces: Sequence[str] = ()) -> None:
        argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.support.capture"]
        for name in interfaces:
            argv += ["--interface", name]
        for mac in macs:
            argv += ["--mac", mac]
        for ip in ips:
            argv += ["--ip", ip]
        from tests.support.multihost import REPO, _env

        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=_env(),
                                     cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"capture did not start: {line!r}")

    def stop(self) -> Counter[str]:
        """End the capture; counts by watched MAC/IP, plus "frames" (all frames seen)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return Counter(json.loads(out.strip().splitlines()[-1]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", action="append", default=[])
    parser.add_argument("--mac", action="append", default=[])
    parser.add_argument("--ip", action="append", default=[])
    args = parser.parse_args()
    _run(args.interface, args.mac, args.ip)


if __name__ == "__main__":
    main()
