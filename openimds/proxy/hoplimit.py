"""The token PUT's hop limit on the wire (AWS `HttpPutResponseHopLimit`), pure.

The metadata API puts the instance's limit (1..64) in an internal answer header on the token
PUT only. The namespace proxy (haproxy) copies it into the DSCP field of that client
connection's packets (`set-tos`) and deletes the header; mangle OUTPUT rules in the proxy's
namespace, owned by the agent that owns the namespace, set the IP TTL / IPv6 hop limit of packets
with that DSCP and then clear the DSCP again, so nothing unusual leaves the namespace. A
container behind a bridge inside the guest is one more hop away, so with limit 1 the answer
never reaches it. Later answers on the same keep-alive connection get DSCP 0 again.

Why DSCP and not a packet mark: `set-mark` needs CAP_NET_ADMIN, and haproxy refuses to drop
privileges with it in its config; `set-tos` needs none, so the hop limit holds for proxies that
run as an unprivileged user (the default). DSCP has 63 non-zero values: limits 1..63 map to
DSCP 1..63, and 64 needs no rule (64 is the kernel's default TTL and hop limit).
"""

from __future__ import annotations

from openimds.linux.iptables import Rule
from openimds.wire import HOP_LIMIT_HEADER

__all__ = [
    "DEFAULT_TTL",
    "HOP_LIMIT_HEADER",
    "MAX_HOP_LIMIT",
    "hop_limit_dscp",
    "listener_response_lines",
    "token_backend_response_lines",
    "ttl_rules",
]

MAX_HOP_LIMIT = 64
# The kernel's default IP TTL and IPv6 hop limit in a new namespace: no rule needed for it.
DEFAULT_TTL = 64


def hop_limit_dscp(limit: int) -> int:
    """The DSCP that carries `limit` from haproxy to the mangle rules (0 = leave as is)."""
    if not 1 <= limit <= MAX_HOP_LIMIT:
        raise ValueError(f"hop limit {limit} is outside 1..{MAX_HOP_LIMIT}")
    return 0 if limit == DEFAULT_TTL else limit


def token_backend_response_lines() -> list[str]:
    """Lines of the token PUT's backend: header -> DSCP. haproxy 2.6's `set-tos` takes a
    constant, hence one rule per value; they sit in a backend of their own that only PUTs
    reach, so no other answer pays for evaluating 64 rules. A response without the header
    fails each on a missing variable. The TOS byte is DSCP << 2 (the low two bits are ECN,
    left to the kernel)."""
    h = HOP_LIMIT_HEADER
    lines = [
        f"    http-response set-var(txn.hop_limit) res.hdr({h}) if {{ res.hdr_cnt({h}) gt 0 }}",
    ]
    lines += [
        f"    http-response set-tos {hop_limit_dscp(n) << 2} if {{ var(txn.hop_limit) -m int {n} }}"
        for n in range(1, MAX_HOP_LIMIT + 1)
    ]
    lines.append(
        "    http-response set-var(sess.hop_marked) bool(1) if { var(txn.hop_limit) -m found }"
    )
    return lines


def listener_response_lines() -> list[str]:
    """The listener's lines, run for every answer after the backend's: a later answer on a
    connection that carried a token answer goes out unmarked again, and the internal header
    never reaches the guest whichever backend answered."""
    h = HOP_LIMIT_HEADER
    return [
        "    http-response set-tos 0 if { var(sess.hop_marked) -m found }"
        " !{ var(txn.hop_limit) -m found }",
        "    http-response unset-var(sess.hop_marked) if !{ var(txn.hop_limit) -m found }",
        f"    http-response del-header {h}",
    ]


def ttl_rules(chain_prefix: str, *, ipv6: bool) -> list[Rule]:
    """mangle OUTPUT rules (iptables-save canonical form): DSCP → TTL (IPv4) / HL (IPv6), then
    the DSCP cleared. Only TCP enters the chain: haproxy's answers are TCP, while dnsmasq sends
    its DHCP, DHCPv6 and router advertisement packets with DSCP CS6 (48) — a router
    advertisement whose hop limit is not 255 is dropped by every guest (RFC 4861) — and
    keepalived's VRRP adverts carry DSCP 48 and must leave with TTL 255, or every peer drops
    them."""
    chain = f"{chain_prefix}OUTPUT"
    rules: list[Rule] = [("mangle", "OUTPUT", f"-p tcp -j {chain}")]
    for n in range(1, MAX_HOP_LIMIT + 1):
        dscp = hop_limit_dscp(n)
        if dscp == 0:
            continue
        target = f"-j HL --hl-set {n}" if ipv6 else f"-j TTL --ttl-set {n}"
        rules.append(("mangle", chain, f"-m dscp --dscp {dscp:#04x} {target}"))
    rules.append(("mangle", chain, "-m dscp ! --dscp 0x00 -j DSCP --set-dscp 0x00"))
    return rules
