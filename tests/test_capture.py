"""The underlay capture's frame decoding (tests/support/capture.py), without root: the lab
test's "0 frames of the metadata port" is only as good as this."""

from __future__ import annotations

import socket
import struct

from tests.support.capture import match, tenant_frame

META_MAC = "fa:16:3e:00:00:99"
GUEST_MAC = "fa:16:3e:00:00:05"


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def eth(dst: str, src: str, etype: int, payload: bytes, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return mac(dst) + mac(src) + tag + struct.pack("!H", etype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    return (struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0)
            + socket.inet_aton(src) + socket.inet_aton(dst) + payload)


def vxlan(inner: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 4789, 16 + len(inner), 0) + b"\x08\0\0\0\0\x03\xe8\0"
    return eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x0800,
               ipv4("192.0.2.11", "192.0.2.12", 17, udp + inner))


def arp(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    body = (struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac(sender_mac)
            + socket.inet_aton(sender_ip) + bytes(6) + socket.inet_aton(target_ip))
    return eth("ff:ff:ff:ff:ff:ff", sender_mac, 0x0806, body)


def test_vxlan_is_unwrapped_to_the_tenant_frame() -> None:
    inner = eth(META_MAC, GUEST_MAC, 0x0800, ipv4("10.0.0.5", "169.254.169.254", 6, b""))
    layers = tenant_frame(vxlan(inner))
    assert [(x.src, x.dst) for x in layers] == [("02:00:00:00:00:01", "02:00:00:00:00:02"),
                                                (GUEST_MAC, META_MAC)]
    assert match(vxlan(inner), [META_MAC], ["169.254.169.254"]) == {META_MAC,
                                                                    "169.254.169.254"}


def test_arp_inside_vxlan_and_vlan_tags() -> None:
    asking = vxlan(arp(GUEST_MAC, "10.0.0.5", "10.0.0.2"))
    assert match(asking, [META_MAC], ["10.0.0.2"]) == {"10.0.0.2"}
    assert match(asking, [GUEST_MAC], []) == {GUEST_MAC}
    tagged = eth(META_MAC, GUEST_MAC, 0x0800, ipv4("10.0.0.5", "10.0.0.2", 6, b""), vlan=100)
    assert match(tagged, [META_MAC], []) == {META_MAC}


def test_unrelated_traffic_matches_nothing() -> None:
    other = vxlan(eth(GUEST_MAC, "fa:16:3e:00:00:06", 0x0800,
                      ipv4("10.0.0.6", "10.0.0.5", 6, b"")))
    assert match(other, [META_MAC], ["169.254.169.254"]) == set()
    assert match(b"\x00" * 10, [META_MAC], []) == set()  # runt frame
