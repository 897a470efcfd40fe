"""The token PUT's hop limit on the wire (AWS `HttpPutResponseHopLimit`), pure.

The metadata API puts the instance's limit (1..64) in an internal answer header on the token
PUT only. The namespace proxy (haproxy) copies it into a packet mark on that client connection
and deletes the header; a mangle OUTPUT rule in the proxy's namespace, owned by the agent that
owns the namespace, sets the IP TTL / IPv6 hop limit of packets with that mark. A container
behind a bridge inside the guest is one more hop away, so with limit 1 the answer never reaches
it. Later answers on the same keep-alive connection get the mark cleared again.

Marks are MARK_BASE | limit << 16: the low 16 bits stay 0, clear of the router's metadata
access mark (`metadata_access_mark`, matched with mask 0xffff).
"""

from __future__ import annotations

from openimds.linux.iptables import Rule

__all__ = [
    "HOP_LIMIT_HEADER",
    "MARK_BASE",
    "MAX_HOP_LIMIT",
    "haproxy_response_lines",
    "hop_limit_mark",
    "ttl_rules",
]

HOP_LIMIT_HEADER = "X-OpenIMDS-Hop-Limit"
MARK_BASE = 0x4F000000
MAX_HOP_LIMIT = 64


def hop_limit_mark(limit: int) -> int:
    if not 1 <= limit <= MAX_HOP_LIMIT:
        raise ValueError(f"hop limit {limit} is outside 1..{MAX_HOP_LIMIT}")
    return MARK_BASE | (limit << 16)


def haproxy_response_lines() -> list[str]:
    """`listen` lines: header → mark (haproxy 2.6 `set-mark` takes a constant, hence one rule
    per value; a response without the header fails each on a missing variable)."""
    h = HOP_LIMIT_HEADER
    lines = [
        f"    http-response set-var(txn.hop_limit) res.hdr({h}) if {{ res.hdr_cnt({h}) gt 0 }}",
        # A later answer on a connection that carried a token answer goes out unmarked.
        "    http-response set-mark 0 if { var(sess.hop_marked) -m found }"
        " !{ var(txn.hop_limit) -m found }",
        "    http-response unset-var(sess.hop_marked) if !{ var(txn.hop_limit) -m found }",
    ]
    lines += [
        f"    http-response set-mark {hex(hop_limit_mark(n))} if {{ var(txn.hop_limit) -m int {n} }}"
        for n in range(1, MAX_HOP_LIMIT + 1)
    ]
    lines += [
        "    http-response set-var(sess.hop_marked) bool(1) if { var(txn.hop_limit) -m found }",
        f"    http-response del-header {h}",
    ]
    return lines


def ttl_rules(chain_prefix: str, *, ipv6: bool) -> list[Rule]:
    """mangle OUTPUT rules (iptables-save canonical form): mark → TTL (IPv4) / HL (IPv6)."""
    chain = f"{chain_prefix}OUTPUT"
    rules: list[Rule] = [("mangle", "OUTPUT", f"-j {chain}")]
    for n in range(1, MAX_HOP_LIMIT + 1):
        target = f"-j HL --hl-set {n}" if ipv6 else f"-j TTL --ttl-set {n}"
        rules.append(("mangle", chain, f"-m mark --mark {hex(hop_limit_mark(n))} {target}"))
    return rules
