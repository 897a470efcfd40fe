"""dnsmasq's files and command line for one network, rendered from the plan's decisions.

Pure text: `render_host_file`, `render_addn_hosts` and `render_opts` give the contents of the
files dnsmasq reads, `dhcp_ranges` its `--dhcp-range` values and `DnsmasqArgs` its argv, in the
seeds' shapes (spec/seed-configs.md: per-subnet tags `tag<index>` and, in each subnet's opts
block, the route lines, the router line, then the DNS line). What to serve (which subnets are
isolated, where the metadata route goes, which DHCP port is ours) is decided in `dhcp/plan.py`
and arrives here as plain values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from openimds.dhcp.model import NetworkInfo, SubnetInfo
from openimds.proxy.haproxy import METADATA_IPV4_CIDR
from openimds.wire import DHCP_OWNER, DISTRIBUTED_OWNER, HA_OWNER, METADATA_OWNER

__all__ = [
    "DHCPV6_STATEFUL",
    "DHCPV6_STATELESS",
    "IGNORED_OWNERS",
    "RA_INTERVAL",
    "RA_RANGE_MODE",
    "SLAAC",
    "DnsmasqArgs",
    "default_gateway",
    "dhcp_ranges",
    "render_addn_hosts",
    "render_host_file",
    "render_opts",
]

SLAAC = "slaac"
DHCPV6_STATELESS = "dhcpv6-stateless"
DHCPV6_STATEFUL = "dhcpv6-stateful"
# dnsmasq's --dhcp-range mode per ipv6_ra_mode when it sends the router advertisements:
# ra-only = A flag, no DHCPv6; ra-stateless = A and O flags plus DHCPv6 information requests;
# static (with --enable-ra) = M flag, addresses only from DHCPv6 host entries.
RA_RANGE_MODE = {SLAAC: "ra-only", DHCPV6_STATELESS: "ra-stateless", DHCPV6_STATEFUL: "static"}
# Neutron's radvd MaxRtrAdvInterval: guests also solicit one at link-up, answered at once.
RA_INTERVAL = 100

# Ports that never get a DHCP host entry (spec 3.5, Wallaby+).
IGNORED_OWNERS = frozenset(
    {
        HA_OWNER,
        "network:floatingip",
        DHCP_OWNER,
        DISTRIBUTED_OWNER,
        METADATA_OWNER,
    }
)


@dataclass(frozen=True)
class DnsmasqArgs:
    """dnsmasq's command line as typed values; `argv()` renders it in the seeds' order."""

    interface: str
    conf_dir: str
    ranges: tuple[str, ...]  # values of --dhcp-range
    lease_max: int
    conf_file: str
    domain: str
    serve_dns: bool = True
    dns_servers: tuple[str, ...] = ()
    # Sent as DHCP option 26: network_data.json withholds the MTU when DHCP serves the
    # network (as nova does), so DHCP must carry it, as Neutron's dnsmasq driver does.
    mtu: int | None = None
    # Router advertisements on `interface` (ra_advertise, docs/dhcp-l3.md): `enable_ra` for a
    # dhcpv6-stateful range (its `static` mode advertises only with it), `ra_mtu` the link MTU.
    ra_advertise: bool = False
    enable_ra: bool = False
    ra_mtu: int | None = None

    @property
    def pid_file(self) -> str:
        return f"{self.conf_dir}/pid"

    @property
    def host_file(self) -> str:
        return f"{self.conf_dir}/host"

    @property
    def addn_hosts_file(self) -> str:
        return f"{self.conf_dir}/addn_hosts"

    @property
    def opts_file(self) -> str:
        return f"{self.conf_dir}/opts"

    @property
    def lease_file(self) -> str:
        return f"{self.conf_dir}/leases"

    def argv(self, binary: str = "dnsmasq") -> list[str]:
        # --keep-in-foreground: the agent supervises dnsmasq as a child (process.spawn);
        # everything after it is the seeds' command line.
        args = [
            binary,
            "--keep-in-foreground",
            "--no-hosts",
            "--no-resolv",
            "--strict-order",
            "--bind-interfaces",
            f"--interface={self.interface}",
            "--except-interface=lo",
            f"--pid-file={self.pid_file}",
            f"--dhcp-hostsfile={self.host_file}",
            f"--addn-hosts={self.addn_hosts_file}",
            f"--dhcp-optsfile={self.opts_file}",
            f"--dhcp-leasefile={self.lease_file}",
        ]
        args += [f"--dhcp-range={r}" for r in self.ranges]
        args += [f"--dhcp-lease-max={self.lease_max}", f"--conf-file={self.conf_file}"]
        if self.mtu:
            args.append(f"--dhcp-option-force=option:mtu,{self.mtu}")
        if self.enable_ra:
            args.append("--enable-ra")
        if self.ra_advertise:
            # Router lifetime 0: the DHCP port routes nothing, so it is nobody's default router.
            mtu = f"mtu:{self.ra_mtu}," if self.ra_mtu else ""
            args.append(f"--ra-param={self.interface},{mtu}{RA_INTERVAL},0")
        args += [f"--server={s}" for s in self.dns_servers]
        if self.domain:
            args.append(f"--domain={self.domain}")
        if not self.serve_dns:
            args.append("--port=0")
        return args


def _fmt_addr(ip: str, version: int) -> str:
    return f"[{ip}]" if version == 6 else ip


def _opt(version: int, tag: str, name: str, values: list[str] | None = None) -> str:
    prefix = "option6" if version == 6 else "option"
    line = f"tag:{tag},{prefix}:{name}" if not name.isdigit() else f"tag:{tag},{name}"
    return ",".join([line, *values]) if values else line


def render_opts(
    network: NetworkInfo,
    dns_domain: str,
    next_hops: Mapping[str, str | None],
    dhcp_servers: Mapping[str, Sequence[str]],
) -> str:
    """The dnsmasq opts file (spec 3.4), one block per DHCP-enabled subnet in subnet order.

    The decisions come in as values: `next_hops` (subnet id -> where 169.254.169.254/32 goes
    on that IPv4 subnet, None for no metadata route) and `dhcp_servers` (subnet id -> the
    addresses of every DHCP port on it, in the order the control plane lists them).
    """
    subnets = [s for s in network.subnets if s.enable_dhcp]
    lines: list[str] = []
    for index, subnet in enumerate(subnets):
        tag = f"tag{index}"
        v = subnet.ip_version
        if v == 6 and subnet.ipv6_address_mode == SLAAC:
            continue
        dns_lines: list[str] = []
        if subnet.dns_nameservers:
            if list(subnet.dns_nameservers) in (["0.0.0.0"], ["::"]):
                # An "any" address means: tell guests there is no DNS server.
                dns_lines.append(_opt(v, tag, "dns-server"))
            else:
                servers = [_fmt_addr(s, v) for s in subnet.dns_nameservers]
                dns_lines.append(_opt(v, tag, "dns-server", servers))
        else:
            # Several DHCP agents serve the network: name every DHCP server (seed 002's
            # `option:dns-server,192.168.111.1,192.168.111.3,192.168.111.2`). With one server
            # dnsmasq already offers its own address, so nothing is written (round 1).
            servers = list(dhcp_servers.get(subnet.id, ()))
            if len(servers) > 1:
                dns_lines.append(_opt(v, tag, "dns-server", [_fmt_addr(s, v) for s in servers]))
        if v == 6:
            lines += dns_lines
            if dns_domain:
                lines.append(_opt(6, tag, "domain-search", [dns_domain]))
            continue  # dnsmasq has no DHCPv6 route option

        gateway = default_gateway(subnet)
        # Never emitted as such: 0.0.0.0/0 is the gateway when the subnet has none.
        routes = [f"{dest},{nexthop}" for dest, nexthop in subnet.host_routes
                  if dest != "0.0.0.0/0"]
        via = next_hops.get(subnet.id)
        if via:
            routes.append(f"{METADATA_IPV4_CIDR},{via}")

        for other in subnets:
            if other.id != subnet.id and other.ip_version == 4:
                routes.insert(0, f"{other.cidr},0.0.0.0")  # on-link, reverse subnet order
        if routes and gateway:
            routes.append(f"0.0.0.0/0,{gateway}")
        if routes:
            lines.append(_opt(4, tag, "classless-static-route", routes))
            lines.append(_opt(4, tag, "249", routes))
        lines.append(_opt(4, tag, "router", [gateway] if gateway else None))
        lines += dns_lines
    return "".join(f"{line}\n" for line in lines)


def default_gateway(subnet: SubnetInfo) -> str | None:
    """The subnet's router for its guests: `gateway_ip`, else the next hop of its first
    0.0.0.0/0 host route."""
    gateway = subnet.gateway_ip
    for dest, nexthop in subnet.host_routes:
        if dest == "0.0.0.0/0":
            gateway = gateway or nexthop
    return gateway


def _host_entries(network: NetworkInfo, dns_domain: str) -> list[tuple[str, str, str, str]]:
    """(mac, ip as written, fqdn, hostname) for each leasable fixed IP, ports sorted by id."""
    leasable = {
        s.id: s
        for s in network.subnets
        if s.enable_dhcp
        and not (s.ip_version == 6 and s.ipv6_address_mode in (SLAAC, DHCPV6_STATELESS))
    }
    entries = []
    for port in sorted(network.ports, key=lambda p: p.id):
        if port.device_owner in IGNORED_OWNERS:
            continue
        for sid, ip in port.fixed_ips:
            subnet = leasable.get(sid)
            if subnet is None:
                continue
            hostname = "host-" + ip.replace(".", "-").replace(":", "-")
            fqdn = f"{hostname}.{dns_domain}" if dns_domain else hostname
            entries.append((port.mac_address, _fmt_addr(ip, subnet.ip_version), fqdn, hostname))
    return entries


def render_host_file(network: NetworkInfo, dns_domain: str) -> str:
    """--dhcp-hostsfile: `mac,fqdn,ip` per fixed IP (IPv6 bracketed)."""
    return "".join(f"{mac},{fqdn},{ip}\n" for mac, ip, fqdn, _ in _host_entries(network, dns_domain))


def render_addn_hosts(network: NetworkInfo, dns_domain: str) -> str:
    """--addn-hosts: `ip<TAB>fqdn hostname` per fixed IP, so dnsmasq resolves guest names."""
    return "".join(
        f"{ip.strip('[]')}\t{fqdn} {host}\n" for _, ip, fqdn, host in _host_entries(network, dns_domain)
    )


def dhcp_ranges(subnets: Sequence[SubnetInfo], lease: int,
                advertised: Collection[str]) -> tuple[list[str], int]:
    """--dhcp-range values (tag<index> per subnet) and the number of addresses they span;
    `advertised`: ids of the IPv6 subnets whose router advertisements dnsmasq sends."""
    lease_text = "infinite" if lease < 0 else f"{lease}s"
    ranges: list[str] = []
    size = 0
    for index, subnet in enumerate(subnets):
        net = ipaddress.ip_network(subnet.cidr, strict=False)
        mode = "static"
        if subnet.ip_version == 4:
            mask: str = str(net.netmask)
        elif subnet.id in advertised:
            mode = RA_RANGE_MODE[str(subnet.ipv6_ra_mode)]
            mask = str(net.prefixlen)
        elif subnet.ipv6_address_mode == SLAAC:
            continue  # addresses come from router advertisements, not dnsmasq
        else:
            mask = str(net.prefixlen)
        ranges.append(f"set:tag{index},{net.network_address},{mode},{mask},{lease_text}")
        size += net.num_addresses
    return ranges, size
