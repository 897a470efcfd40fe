"""What one network needs in its DHCP namespace: a pure function of the inventory and `now`.

`desired_dhcp_state(network, opts, now)` returns a `DhcpPlan` (or None: nothing should exist).
The applier compares the plan with what `openimds.linux.observe` reads and makes the difference;
no decision here ever looks at the kernel, so a restart or a missed event converges to the same
result (the field bug of spec neutron-metadata.md section 3.7 cannot happen).

Rules follow spec neutron-metadata.md sections 3.1-3.4 and 3.6 (HEAD behaviour). This module
holds the decisions only (isolation, the metadata route and proxy, which DHCP port, the lease
window); `dhcp/dnsmasq_render.py` turns them into dnsmasq's files and argv in the seeds' shapes.

One deliberate change from upstream: the metadata address and the proxy are tied together and
follow the metadata decision, instead of the address being added whenever an option is on.
When a subnet stops being isolated (a router port takes its gateway IP), its opts at once route
169.254.169.254 via the gateway, but address and proxy keep being planned for
`dhcp_lease_duration` seconds after that router port's `created_at`, because guests keep the
route they were leased until they renew. The window is computed from inventory timestamps and
`now` only, so a restart changes nothing; `DhcpPlan.next_change_at` says when the plan changes
by time alone so the agent can schedule a re-reconcile.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from openimds import wire
from openimds.dhcp.dnsmasq_render import (
    DHCPV6_STATEFUL,
    RA_RANGE_MODE,
    DnsmasqArgs,
    default_gateway,
    dhcp_ranges,
    render_addn_hosts,
    render_host_file,
    render_opts,
)
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.vrrp import plan_vips, vip_ip
from openimds.linux.iptables import Rule
from openimds.linux.keepalived import VrrpConf
from openimds.proxy.haproxy import (
    METADATA_IPV4,
    METADATA_IPV4_CIDR,
    METADATA_IPV6_CIDR,
    Identity,
    ProxyDefaults,
    ProxySpec,
    network_binds,
    proxy_spec,
)
from openimds.proxy.hoplimit import ttl_rules
from openimds.wire import (
    DHCP_OWNER,
    DISTRIBUTED_OWNER,
    ROUTER_INTERFACE_OWNERS,
    dhcp_device_id,
)

__all__ = [
    "METADATA_V4",
    "METADATA_V6",
    "DhcpOptions",
    "DhcpPlan",
    "desired_dhcp_state",
    "dhcp_device_id",
    "distributed_metadata_port",
    "isolated_subnets",
    "metadata_mode_of",
    "metadata_next_hop",
    "metadata_next_hops",
    "tap_name",
]

METADATA_IP = METADATA_IPV4
METADATA_V4 = METADATA_IPV4_CIDR
METADATA_V6 = METADATA_IPV6_CIDR
METADATA_NETWORK = ipaddress.ip_network("169.254.0.0/16")

# Our iptables chains in a qdhcp- namespace (the L3 agent's are openimds-l3-*).
DHCP_CHAIN_PREFIX = "openimds-dhcp-"
@dataclass(frozen=True)
class DhcpOptions:
    """The dhcp_agent.ini / neutron.conf options the plan depends on (plain values)."""

    enable_isolated_metadata: bool = False
    force_metadata: bool = False
    enable_metadata_network: bool = False
    dhcp_lease_duration: int = 86400  # seconds; -1 = infinite
    dns_domain: str = "openstacklocal"
    dhcp_confs: str = "/var/lib/openimds/dhcp"
    dnsmasq_lease_max: int = 2**24
    dnsmasq_config_file: str = ""  # "" -> /dev/null, so no system dnsmasq.conf is read
    dnsmasq_dns_servers: tuple[str, ...] = ()
    # True (the seeds' shape): dnsmasq answers DNS for the addn_hosts names on the tap.
    # False adds --port=0, which turns DNS off entirely.
    serve_dns: bool = True
    ipv6_enabled: bool = True  # does the host have IPv6 (gates fe80::a9fe:a9fe)
    # Which network:dhcp port is ours (Neutron: dhcp_device_id(host, network)). None = the
    # oldest DHCP port of the network, for single-agent deployments.
    dhcp_port_device_id: str | None = None
    # keepalived's advert interval for the metadata next hop (dhcp/vrrp.py).
    vrrp_advert_int: int = 2
    # What the network's proxy shares with every proxy of the agent (its files, the agent
    # socket, user, limits): the plan adds the namespace's part and carries the ProxySpec.
    proxy: ProxyDefaults = field(default_factory=ProxyDefaults)


@dataclass(frozen=True)
class DhcpPlan:
    network_id: str
    namespace: str  # qdhcp-<network id>
    interface: str  # tap + first 11 chars of the DHCP port id
    port_id: str
    mac_address: str
    mtu: int
    # Everything on the tap: the DHCP port's ip/prefix (subnet order), then metadata addresses.
    addresses: tuple[str, ...]
    conf_dir: str
    host_file: str  # file contents
    addn_hosts: str
    opts: str
    dnsmasq: DnsmasqArgs
    metadata_proxy: bool  # haproxy on 169.254.169.254:80 in this namespace
    # Its whole spec (None exactly when `metadata_proxy` is False); always keyed (files,
    # ownership, StopProxy) by the network id, stamping `proxy_router_id` when that is set.
    proxy: ProxySpec | None = None
    # enable_metadata_network (spec 3.6): the proxy identifies the router, not the network.
    proxy_router_id: str | None = None
    proxy_bind_ipv6: bool = False  # also [fe80::a9fe:a9fe]:80 on the tap
    # When the plan changes by time alone (end of a lease window); None = never.
    next_change_at: datetime | None = None
    isolated: tuple[str, ...] = field(default=())  # ids of isolated DHCP subnets (for logs)
    # The network's metadata next hops (dhcp/vrrp.py) when keepalived moves them: the
    # keepalived config, and the addresses it adds and removes on `interface` (which the
    # address sync leaves as keepalived has them). Without peers they are in `addresses`.
    vrrp: VrrpConf | None = None
    vips: tuple[str, ...] = ()
    # mangle rules (iptables-save form) while the proxy runs: the token PUT's answer leaves
    # with the instance's hop limit (proxy/hoplimit.py), over IPv4 and IPv6 alike.
    rules: tuple[Rule, ...] = ()
    rules6: tuple[Rule, ...] = ()
    chain_prefix: str = DHCP_CHAIN_PREFIX

    def files(self) -> dict[str, str]:
        """Path -> contents of every file dnsmasq reads."""
        return {
            self.dnsmasq.host_file: self.host_file,
            self.dnsmasq.addn_hosts_file: self.addn_hosts,
            self.dnsmasq.opts_file: self.opts,
        }


def tap_name(port_id: str) -> str:
    return wire.tap_device(port_id)


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _gateway_router_ports(network: NetworkInfo, subnet: SubnetInfo) -> list[PortInfo]:
    if not subnet.gateway_ip:
        return []
    return [
        p
        for p in network.ports
        if p.device_owner in ROUTER_INTERFACE_OWNERS
        and any(sid == subnet.id and _same_ip(ip, subnet.gateway_ip) for sid, ip in p.fixed_ips)
    ]


def isolated_subnets(network: NetworkInfo) -> dict[str, bool]:
    """subnet id -> isolated (spec 3.1): no router interface port holds its gateway IP."""
    return {s.id: not _gateway_router_ports(network, s) for s in network.subnets}


def _ip_in(port: PortInfo | None, subnet_id: str) -> str | None:
    if port is None:
        return None
    return next((ip for sid, ip in port.fixed_ips if sid == subnet_id), None)


def _ovn_metadata_port(network: NetworkInfo) -> PortInfo | None:
    return next(
        (
            p
            for p in network.ports
            if p.device_owner == DISTRIBUTED_OWNER and p.device_id.startswith("ovnmeta-")
        ),
        None,
    )


def distributed_metadata_port(network: NetworkInfo) -> PortInfo | None:
    """The network's metadata "localport": openimds' `qmeta-<network>` (metadata_mode =
    distributed, control/distributed_metadata.py) or an OVN agent's `ovnmeta-<network>`. A
    retiring one (openimds.metadata_retirement) is none: new leases take the network_node
    route while the l2-agents keep serving the old one until the last such lease ends."""
    return next(
        (
            p
            for p in network.ports
            if p.device_owner == DISTRIBUTED_OWNER
            and p.device_id.startswith(("qmeta-", "ovnmeta-"))
            and not p.retiring
        ),
        None,
    )


def metadata_mode_of(network: NetworkInfo) -> str:
    """The deployment's `metadata_mode` as the inventory states it for this network: the
    control plane keeps a distributed metadata port exactly in `distributed` mode, so the DHCP
    agents need no option of their own and follow a mode switch from the change feed."""
    return "distributed" if distributed_metadata_port(network) is not None else "network_node"


def metadata_next_hop(
    metadata_mode: str,
    *,
    isolated: bool,
    force_metadata: bool,
    enable_isolated_metadata: bool,
    dhcp_ip: str | None,
    distributed_ip: str | None,
    gateway: str | None,
    vip: str | None = None,
) -> str | None:
    """Which address option 121/249 sends 169.254.169.254/32 to on one IPv4 subnet (None: no
    metadata route).

    * distributed: the metadata port's address on the subnet (isolated or routed alike: the
      guest's own host answers, docs/distributed-metadata.md); a subnet it has no address on
      yet falls back to the network_node answer, so a guest never leases a dead route.
    * network_node (spec 3.4): the DHCP port with force_metadata, or on an isolated subnet
      with enable_isolated_metadata; else the router (the gateway) on a routed subnet.
      Where the DHCP port would be the answer and the network has a metadata next hop
      (`vip`, a `network:metadata` port's address that keepalived moves among the DHCP
      namespaces, dhcp/vrrp.py), that address instead: the same for every DHCP agent, and
      still right when the agent that leased it is gone.
    """
    if metadata_mode == "distributed" and distributed_ip:
        return distributed_ip
    if force_metadata or (isolated and enable_isolated_metadata):
        return vip or dhcp_ip
    if not isolated and gateway:
        return gateway
    return None


def dhcp_servers(network: NetworkInfo, subnet_id: str) -> list[str]:
    """Addresses of every DHCP port on `subnet_id`, in the ports' creation order (the order
    the control plane lists them in, the same on every agent)."""
    ports = sorted((p for p in network.ports if p.device_owner == DHCP_OWNER),
                   key=lambda p: (p.created_at, p.id))
    return [ip for p in ports for sid, ip in p.fixed_ips if sid == subnet_id]


def _pick_dhcp_port(network: NetworkInfo, opts: DhcpOptions) -> PortInfo | None:
    ports = [p for p in network.ports if p.device_owner == DHCP_OWNER]
    if opts.dhcp_port_device_id is not None:
        ports = [p for p in ports if p.device_id == opts.dhcp_port_device_id]
    return min(ports, key=lambda p: (p.created_at, p.id), default=None)


def metadata_next_hops(network: NetworkInfo, dhcp_port: PortInfo | None, opts: DhcpOptions
                       ) -> dict[str, str | None]:
    """IPv4 DHCP subnet id -> where its option 121/249 sends 169.254.169.254/32 (None: no
    metadata route), by `metadata_next_hop` with this network's mode, isolation and ports."""
    isolated = isolated_subnets(network)
    local_port = distributed_metadata_port(network)
    mode = metadata_mode_of(network)
    return {
        subnet.id: metadata_next_hop(
            mode,
            isolated=isolated[subnet.id],
            force_metadata=opts.force_metadata,
            enable_isolated_metadata=opts.enable_isolated_metadata,
            dhcp_ip=_ip_in(dhcp_port, subnet.id),
            distributed_ip=_ip_in(local_port, subnet.id),
            gateway=default_gateway(subnet),
            vip=vip_ip(network, subnet.id),
        )
        for subnet in network.subnets
        if subnet.enable_dhcp and subnet.ip_version == 4
    }


def advertised_here(subnet: SubnetInfo, isolated: bool) -> bool:
    """Does the DHCP port send this subnet's router advertisements? When OpenStack owns them
    (`ipv6_ra_mode` set) and no router port holds the gateway: a router advertises its own
    links (l3/plan.py), an external router those without `ipv6_ra_mode`."""
    return subnet.ip_version == 6 and subnet.ipv6_ra_mode in RA_RANGE_MODE and isolated


def _metadata_decision(
    network: NetworkInfo,
    subnets: list[SubnetInfo],
    isolated: dict[str, bool],
    opts: DhcpOptions,
    now: datetime,
) -> tuple[bool, str | None, datetime | None]:
    """(serve the proxy?, router id for the proxy header, when this changes by time).

    Spec 3.2 order of checks, then the openimds lease window.
    """
    if _ovn_metadata_port(network) is not None:
        return False, None, None
    if opts.force_metadata:
        return True, None, None
    if not opts.enable_isolated_metadata:
        return False, None, None
    if opts.enable_metadata_network and any(
        ipaddress.ip_network(s.cidr, strict=False).subnet_of(METADATA_NETWORK)  # type: ignore[arg-type]
        for s in subnets
        if s.ip_version == 4
    ):
        router_ports = sorted(
            (p for p in network.ports if p.device_owner in ROUTER_INTERFACE_OWNERS),
            key=lambda p: (p.created_at, p.id),
        )
        return True, (router_ports[0].device_id if router_ports else None), None
    if any(isolated[s.id] for s in subnets):
        return True, None, None
    # Every DHCP subnet is routed now. Guests that leased the DHCP-port route before the router
    # came keep using it until renewal, so keep serving until the last lease window closes.
    if opts.dhcp_lease_duration < 0:
        return True, None, None  # leases never expire: the old route never goes away
    lease = timedelta(seconds=opts.dhcp_lease_duration)
    ends = []
    for subnet in subnets:
        routed_since = min(p.created_at for p in _gateway_router_ports(network, subnet))
        ends.append(routed_since + lease)
    open_until = max(ends)
    if now < open_until:
        return True, None, open_until
    return False, None, None


def _proxy_spec(network_id: str, defaults: ProxyDefaults, ipv6_interface: str | None,
                router_id: str | None) -> ProxySpec:
    """The network's proxy, always keyed by the network id; a metadata network (spec 3.6)
    stamps its router's id instead."""
    return proxy_spec(defaults, "network", network_id, network_binds(ipv6_interface=ipv6_interface),
                      identity=Identity("router", router_id) if router_id else None)


def desired_dhcp_state(network: NetworkInfo, opts: DhcpOptions, now: datetime) -> DhcpPlan | None:
    """The whole DHCP namespace for `network`, or None when nothing should exist there."""
    subnets = [s for s in network.subnets if s.enable_dhcp]
    if not subnets:
        return None
    port = _pick_dhcp_port(network, opts)
    by_id = {s.id: s for s in subnets}
    if port is None or not any(sid in by_id for sid, _ in port.fixed_ips):
        return None

    isolated = isolated_subnets(network)
    serve, router_id, next_change = _metadata_decision(network, subnets, isolated, opts, now)

    addresses: list[str] = []
    for subnet in subnets:  # subnet order, so the primary address is stable
        for sid, ip in port.fixed_ips:
            if sid == subnet.id:
                prefix = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
                addresses.append(f"{ip}/{prefix}")
    bind_v6 = False
    iface = tap_name(port.id)
    vips: tuple[str, ...] = ()
    vrrp = None
    if serve:
        static, vrrp = plan_vips(network, port, iface,
                                 [s.id for s in subnets if s.ip_version == 4],
                                 opts.vrrp_advert_int)
        addresses += static
        vips = tuple(c for c, _ in vrrp.vips) if vrrp is not None else ()
        if not any(a.split("/")[0] == METADATA_IP for a in addresses):
            addresses.append(METADATA_V4)
        # fe80::a9fe:a9fe only while no router serves it on this link: a router's qr- port
        # holds it too (l3/plan.py), and two owners on one link fight over neighbour discovery.
        if opts.ipv6_enabled and any(s.ip_version == 6 and isolated[s.id] for s in subnets):
            addresses.append(METADATA_V6)
            bind_v6 = True

    conf_dir = f"{opts.dhcp_confs.rstrip('/')}/{network.id}"
    advertised = [s for s in subnets if advertised_here(s, isolated[s.id])]
    ranges, size = dhcp_ranges(subnets, opts.dhcp_lease_duration, {s.id for s in advertised})
    dnsmasq = DnsmasqArgs(
        interface=iface,
        conf_dir=conf_dir,
        ranges=tuple(ranges),
        lease_max=min(size, opts.dnsmasq_lease_max),
        conf_file=opts.dnsmasq_config_file or "/dev/null",
        domain=opts.dns_domain,
        serve_dns=opts.serve_dns,
        dns_servers=opts.dnsmasq_dns_servers,
        mtu=network.mtu if any(sub.ip_version == 4 for sub in subnets) else None,
        ra_advertise=bool(advertised),
        enable_ra=any(s.ipv6_ra_mode == DHCPV6_STATEFUL for s in advertised),
        ra_mtu=network.mtu if advertised and network.mtu else None,
    )
    return DhcpPlan(
        network_id=network.id,
        namespace=wire.dhcp_namespace(network.id),
        interface=iface,
        port_id=port.id,
        mac_address=port.mac_address,
        mtu=network.mtu,
        addresses=tuple(addresses),
        conf_dir=conf_dir,
        host_file=render_host_file(network, opts.dns_domain),
        addn_hosts=render_addn_hosts(network, opts.dns_domain),
        opts=render_opts(network, opts.dns_domain, metadata_next_hops(network, port, opts),
                         {s.id: dhcp_servers(network, s.id) for s in subnets}),
        dnsmasq=dnsmasq,
        metadata_proxy=serve,
        proxy=_proxy_spec(network.id, opts.proxy, iface if bind_v6 else None, router_id)
        if serve else None,
        proxy_router_id=router_id,
        proxy_bind_ipv6=bind_v6,
        next_change_at=next_change,
        isolated=tuple(s.id for s in subnets if isolated[s.id]),
        vrrp=vrrp,
        vips=vips,
        rules=tuple(ttl_rules(DHCP_CHAIN_PREFIX, ipv6=False)) if serve else (),
        rules6=(tuple(ttl_rules(DHCP_CHAIN_PREFIX, ipv6=True))
                if serve and opts.ipv6_enabled else ()),
    )
