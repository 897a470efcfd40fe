"""What one router needs in its namespace: a pure function of the inventory and the options.

`desired_router_state(router, opts)` returns a `RouterPlan`: the `qrouter-<id>` namespace, one
`qr-` device per interface port, sysctls, the complete rule set of our own iptables chains as
(table, chain, rule) tuples (spec neutron-metadata.md section 4.1, with our chain prefix instead
of `neutron-l3-agent-`), and whether the proxy runs. `render_iptables_restore(rules, existing)`
turns the rule set into `iptables-restore --noflush` text that rewrites only our chains.

Rules are written exactly as `iptables-save` prints them, so comparing the plan with a saved
namespace is a plain equality and a namespace already in sync renders to "" (applying twice
is a no-op, not merely harmless).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from openimds import wire
from openimds.l3.ha import HaPlan, ha_name
from openimds.l3.model import RouterInfo
from openimds.linux.iptables import BUILTIN_CHAINS, IptablesState, Rule
from openimds.proxy.haproxy import METADATA_IPV4_CIDR, METADATA_IPV6_CIDR, ROUTER_METADATA_PORT
from openimds.proxy.hoplimit import ttl_rules

__all__ = [
    "CHAIN_NAME_MAX",
    "L3Options",
    "QrPort",
    "RaAdvert",
    "RaPlan",
    "RouterPlan",
    "desired_router_state",
    "qr_name",
    "render_iptables_restore",
]

CHAIN_NAME_MAX = 28  # xtables: 29 bytes including the NUL
TABLE_ORDER = ("raw", "mangle", "nat", "filter", "security")
METADATA_V4 = METADATA_IPV4_CIDR
METADATA_V6 = METADATA_IPV6_CIDR
# Our chains are <prefix><builtin>, the longest builtin being POSTROUTING.
_LONGEST_SUFFIX = len("POSTROUTING")


@dataclass(frozen=True)
class L3Options:
    """The l3_agent.ini options the plan depends on (plain values)."""

    enable_metadata_proxy: bool = True
    metadata_port: int = ROUTER_METADATA_PORT
    metadata_access_mark: str = "0x1"
    ipv6_enabled: bool = True  # ip6tables rules for fe80::a9fe:a9fe and a "::" listener
    chain_prefix: str = "openimds-l3-"
    # `metadata_ipv6_addresses`: more IPv6 metadata addresses (fd00:ec2::254), as addresses.
    extra_ipv6_addresses: tuple[str, ...] = ()
    # HA routers: keepalived's VRRP settings (ha_vrrp_advert_int, ha_vrrp_auth_*).
    ha_advert_int: int = 2
    ha_auth_type: str | None = None
    ha_auth_password: str | None = None

    def __post_init__(self) -> None:
        for address in self.extra_ipv6_addresses:
            if ipaddress.ip_address(address).version != 6:  # ValueError names a bad one
                raise ValueError(f"metadata_ipv6_addresses: {address} is not an IPv6 address")
        if len(self.chain_prefix) + _LONGEST_SUFFIX > CHAIN_NAME_MAX:
            raise ValueError(
                f"chain_prefix {self.chain_prefix!r} is too long: chain names are limited to "
                f"{CHAIN_NAME_MAX} characters; use at most {CHAIN_NAME_MAX - _LONGEST_SUFFIX}"
            )
        if not 0 < self.metadata_port < 65536:
            raise ValueError(f"metadata_port {self.metadata_port} is not a TCP port")
        int(self.metadata_access_mark, 0)  # raises ValueError with the bad value


@dataclass(frozen=True)
class QrPort:
    name: str  # qr-<first 11 chars of the port id>
    port_id: str
    network_id: str  # the bridge it joins
    mac_address: str
    addresses: tuple[str, ...]  # gateway "ip/prefix" values
    mtu: int


# Router advertisements (Neutron: radvd in the router namespace). openimds runs dnsmasq, which
# is installed anyway, as a pure advertisement daemon: `--dhcp-ignore=tag:dhcpv6` answers no
# DHCPv6 (the DHCP namespace's dnsmasq does), `--port=0` serves no DNS. Range modes per
# ipv6_ra_mode: ra-only = A flag; ra-stateless = A and O flags; static (with --enable-ra) =
# M flag, no SLAAC.
RA_RANGE_MODE = {"slaac": "ra-only", "dhcpv6-stateless": "ra-stateless",
                 "dhcpv6-stateful": "static"}
RA_INTERVAL = 100  # Neutron's radvd MaxRtrAdvInterval; a solicitation is answered at once
RA_ROUTER_LIFETIME = 1800  # seconds the guest keeps the router as its default route


@dataclass(frozen=True)
class RaAdvert:
    interface: str  # qr- device
    prefix: str  # the subnet's CIDR
    ra_mode: str  # ipv6_ra_mode
    mtu: int


@dataclass(frozen=True)
class RaPlan:
    """The router's advertisement daemon: one dnsmasq for all its qr- ports."""

    adverts: tuple[RaAdvert, ...]

    def argv(self, conf_dir: str, binary: str = "dnsmasq") -> list[str]:
        interfaces = sorted({a.interface for a in self.adverts})
        args = [binary, "--keep-in-foreground", "--no-hosts", "--no-resolv", "--port=0",
                "--bind-interfaces"]
        args += [f"--interface={i}" for i in interfaces]
        args += ["--except-interface=lo", f"--pid-file={conf_dir}/pid",
                 f"--dhcp-leasefile={conf_dir}/leases", "--conf-file=/dev/null",
                 "--dhcp-ignore=tag:dhcpv6"]
        if any(RA_RANGE_MODE[a.ra_mode] == "static" for a in self.adverts):
            args.append("--enable-ra")  # a static range advertises only with it
        for a in self.adverts:
            net = ipaddress.ip_network(a.prefix, strict=False)
            args.append(f"--dhcp-range={net.network_address},{RA_RANGE_MODE[a.ra_mode]},"
                        f"{net.prefixlen}")
        mtu = {a.interface: a.mtu for a in self.adverts}
        args += [f"--ra-param={i},mtu:{mtu[i]},{RA_INTERVAL},{RA_ROUTER_LIFETIME}"
                 for i in interfaces]
        return args


@dataclass(frozen=True)
class RouterPlan:
    router_id: str
    namespace: str  # qrouter-<router id>
    ports: tuple[QrPort, ...]
    sysctls: tuple[tuple[str, str], ...]
    rules: tuple[Rule, ...]  # iptables (IPv4)
    rules6: tuple[Rule, ...]  # ip6tables
    chain_prefix: str
    metadata_proxy: bool
    proxy_listen: tuple[str, int] | None  # haproxy bind (host, port) when metadata_proxy
    ra: RaPlan | None = None  # router advertisements on its IPv6 links
    # HA router: keepalived's plan and the ha- device; the qr- addresses are then keepalived's
    # (virtual_ipaddress_excluded), held by the master only.
    ha: HaPlan | None = None
    ha_port: QrPort | None = None


def qr_name(port_id: str) -> str:
    return wire.router_interface_device(port_id)


def _mark(opts: L3Options) -> str:
    # iptables-save prints marks as lower-case hex; normalise "1" or "0X1" to match it.
    return f"{hex(int(opts.metadata_access_mark, 0))}/0xffff"


def metadata_rules(opts: L3Options, dest: str) -> list[Rule]:
    """Spec 4.1 (and 4.3 with dest=fe80::a9fe:a9fe/128), in iptables-save's canonical form."""
    p = opts.chain_prefix
    mark = _mark(opts)
    port = opts.metadata_port
    rules: list[Rule] = [
        # Always, even with the proxy off, so stray early requests are marked (and never forwarded).
        ("mangle", "PREROUTING", f"-j {p}PREROUTING"),
        (
            "mangle",
            f"{p}PREROUTING",
            f"-d {dest} -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark {mark}",
        ),
        ("filter", "FORWARD", f"-j {p}FORWARD"),
        ("filter", f"{p}FORWARD", f"-m mark --mark {mark} -j DROP"),
    ]
    if opts.enable_metadata_proxy:
        rules += [
            ("nat", "PREROUTING", f"-j {p}PREROUTING"),
            (
                "nat",
                f"{p}PREROUTING",
                f"-d {dest} -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports {port}",
            ),
            ("filter", "INPUT", f"-j {p}INPUT"),
            # Only redirected (marked) packets may reach the proxy port (LP #1187102).
            ("filter", f"{p}INPUT", f"-m mark --mark {mark} -j ACCEPT"),
            ("filter", f"{p}INPUT", f"-p tcp -m tcp --dport {port} -j DROP"),
        ]
        # The token PUT's answer leaves with the instance's hop limit as its TTL.
        rules += ttl_rules(p, ipv6=":" in dest)
    return rules


def _metadata_v6(opts: L3Options) -> tuple[str, ...]:
    """fe80::a9fe:a9fe and the extra IPv6 metadata addresses, as /128 host addresses."""
    extra = (f"{ipaddress.ip_address(a)}/128" for a in opts.extra_ipv6_addresses)
    return (METADATA_V6, *extra)


def _rules6(opts: L3Options) -> list[Rule]:
    rules = metadata_rules(opts, METADATA_V6)
    for dest in _metadata_v6(opts)[1:]:
        # Only the per-destination MARK and REDIRECT rules; the jumps, FORWARD drop, INPUT
        # guard and hop-limit rules are already there once.
        rules += [r for r in metadata_rules(opts, dest) if dest in r[2]]
    return rules


# MLD report and done messages (v1 report 131, done 132, v2 report 143), as ip6tables-save
# prints the match.
_MLD_TYPES = (131, 132, 143)


def _ha_rules6(opts: L3Options) -> list[Rule]:
    """No MLD out of an HA router's qr- devices. Every copy of a qr- device has the gateway's
    MAC, and the kernel sends MLD reports even from a device without an address (source ::)
    when it joins ff02::2 (forwarding on): a backup that comes up would teach the bridges on
    the way, the master's own included, that the gateway MAC lives at the backup's host, and
    the guests' packets would stop reaching the master until it sends from that MAC again.
    The bridges flood multicast without the reports (they have no querier)."""
    chain = f"{opts.chain_prefix}OUTPUT"
    return [("filter", "OUTPUT", f"-j {chain}"),
            *(("filter", chain, f"-o qr-+ -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j DROP")
              for t in _MLD_TYPES)]


def desired_router_state(router: RouterInfo, opts: L3Options) -> RouterPlan:
    # fe80::a9fe:a9fe on every qr- port (added without DAD): a guest's neighbour solicitation
    # for it must be answered on its link before ip6tables can redirect the connection.
    md6 = _metadata_v6(opts) if opts.ipv6_enabled and opts.enable_metadata_proxy else ()
    ports = tuple(
        QrPort(
            name=qr_name(i.port_id),
            port_id=i.port_id,
            network_id=i.network_id,
            mac_address=i.mac_address,
            addresses=(*i.addresses, *md6),
            mtu=i.mtu,
        )
        for i in sorted(router.interfaces, key=lambda i: i.port_id)
    )
    sysctls = [("net.ipv4.ip_forward", "1")]
    if opts.ipv6_enabled:
        sysctls.append(("net.ipv6.conf.all.forwarding", "1"))
    adverts = tuple(
        RaAdvert(qr_name(i.port_id), cidr, mode, i.mtu)
        for i in sorted(router.interfaces, key=lambda i: i.port_id)
        for cidr, mode in i.ipv6_ra
        if mode in RA_RANGE_MODE
    ) if opts.ipv6_enabled else ()
    ha = ha_port = None
    if router.ha is not None:
        p = router.ha.port
        ha_port = QrPort(name=ha_name(p.port_id), port_id=p.port_id, network_id=p.network_id,
                         mac_address=p.mac_address, addresses=p.addresses, mtu=p.mtu)
        ha = HaPlan(router_id=router.id, vr_id=router.ha.vr_id, device=ha_port.name,
                    vips=tuple((a, q.name) for q in ports for a in q.addresses),
                    advert_int=opts.ha_advert_int, auth_type=opts.ha_auth_type,
                    auth_password=opts.ha_auth_password)
        # Not yet: advertisements from an HA router. Its qr- devices have no link-local
        # address (below), so there is no source for an advertisement; Neutron moves the
        # link-local address with keepalived and runs radvd on the master only. Until then a
        # routed IPv6 slaac/dhcpv6 subnet needs a legacy router (docs/dhcp-l3.md).
        adverts = ()
        if opts.ipv6_enabled:
            # Every copy of a qr- device has the same MAC: no kernel link-local address (and
            # so no DAD or MLD from a backup that would teach the bridges the wrong host).
            # Set before the devices come up; Neutron does the same (addrgenmode none).
            sysctls.append(("net.ipv6.conf.default.addr_gen_mode", "1"))
    listen = None
    if opts.enable_metadata_proxy:
        listen = ("::" if opts.ipv6_enabled else "0.0.0.0", opts.metadata_port)
    return RouterPlan(
        router_id=router.id,
        namespace=wire.router_namespace(router.id),
        ports=ports,
        sysctls=tuple(sysctls),
        rules=tuple(metadata_rules(opts, METADATA_V4)),
        rules6=tuple(_rules6(opts) + (_ha_rules6(opts) if ha else [])) if opts.ipv6_enabled
        else (),
        chain_prefix=opts.chain_prefix,
        metadata_proxy=opts.enable_metadata_proxy,
        proxy_listen=listen,
        ra=RaPlan(adverts) if adverts else None,
        ha=ha,
        ha_port=ha_port,
    )


def _targets(rule: str) -> str | None:
    words = rule.split()
    for flag in ("-j", "-g"):
        if flag in words and words.index(flag) + 1 < len(words):
            return words[words.index(flag) + 1]
    return None


def _ordered(tables: Iterable[str]) -> list[str]:
    return sorted(set(tables), key=lambda t: (TABLE_ORDER.index(t) if t in TABLE_ORDER else 99, t))


def render_iptables_restore(
    rules: Sequence[Rule],
    existing: IptablesState | None = None,
    prefix: str = "openimds-l3-",
) -> str:
    """`iptables-restore --noflush` text that makes our chains exactly `rules`; "" if in sync.

    Ownership is by name: every chain starting with `prefix` is ours. Rules in our chains are
    written after declaring the chain (`:chain - [0:0]`, which flushes an existing chain under
    --noflush). Rules in builtin chains (the jumps) cannot be handled that way, since those
    chains are not ours to flush: given `existing` (parsed iptables-save of the namespace), a
    missing jump is inserted at the top, extra copies are deleted, and jumps to our chains
    that the plan no longer has are deleted, after which those chains are flushed and removed.
    Without `existing` the namespace is assumed to have none of our chains (first apply).

    `render_iptables_restore([], existing)` therefore removes everything we own.
    """
    existing = existing or IptablesState()
    want_owned: dict[str, dict[str, list[str]]] = {}  # table -> our chain -> rules
    want_builtin: dict[str, list[tuple[str, str]]] = {}  # table -> [(chain, rule)]
    for table, chain, rule in rules:
        if chain.startswith(prefix):
            want_owned.setdefault(table, {}).setdefault(chain, []).append(rule)
        elif chain in BUILTIN_CHAINS:
            want_builtin.setdefault(table, [])
            if (chain, rule) not in want_builtin[table]:
                want_builtin[table].append((chain, rule))
        else:
            raise ValueError(
                f"rule in chain {chain!r}, which is neither ours ({prefix}*) nor builtin"
            )
        target = _targets(rule)
        if target and target.startswith(prefix):
            want_owned.setdefault(table, {}).setdefault(target, [])
    for table_chains in want_owned.values():
        for chain in table_chains:
            if len(chain) > CHAIN_NAME_MAX:
                raise ValueError(f"chain name {chain!r} is longer than {CHAIN_NAME_MAX}")

    have_owned = existing.owned_chains(prefix)
    out: list[str] = []
    for table in _ordered([*want_owned, *want_builtin, *have_owned]):
        saved = existing.table(table)
        desired = want_owned.get(table, {})
        stale = [c for c in have_owned.get(table, []) if c not in desired]
        lines: list[str] = []
        in_sync = not stale

        # Builtin chains: delete jumps to our chains that are not wanted, and extra copies.
        wanted_builtin = want_builtin.get(table, [])
        for chain, rule in saved.rules:
            if chain in BUILTIN_CHAINS:
                target = _targets(rule)
                owned_jump = bool(target and target.startswith(prefix))
                if owned_jump and (chain, rule) not in wanted_builtin:
                    lines.append(f"-D {chain} {rule}")
                    in_sync = False
        inserts: list[str] = []
        for chain, rule in wanted_builtin:
            count = saved.rules_in(chain).count(rule)
            if count == 0:
                inserts.append(f"-I {chain} 1 {rule}")
            lines += [f"-D {chain} {rule}"] * max(0, count - 1)
            in_sync = in_sync and count == 1
        for chain, chain_rules in desired.items():
            in_sync = in_sync and chain in saved.chains and saved.rules_in(chain) == chain_rules
        if in_sync:
            continue

        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in sorted([*desired, *stale])]  # declare = flush
        out += lines
        out += [f"-X {c}" for c in sorted(stale)]
        for chain in sorted(desired):
            out += [f"-A {chain} {r}" for r in desired[chain]]
        out += inserts
        out.append("COMMIT")
    return "".join(f"{line}\n" for line in out)
