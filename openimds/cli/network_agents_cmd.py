"""`openimds dhcp-agent`, `openimds l3-agent` and `openimds port-plug`.

The agents read dhcp_agent.ini / l3_agent.ini (the seed's options work), authenticate to the
control-plane API with the REST-era options (auth_url, admin_user, admin_password,
admin_tenant_name) and reconcile until SIGTERM/SIGINT. `port-plug` puts an instance port into
a namespace for tests and demos: a veth from the network's bridge in the fabric namespace,
with the port's MAC on the far end; addresses only with --configure-ip (normally the guest's
DHCP client sets them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from openimds.cli.common import config_parent, setup_logging

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

    from openimds.control.client import ControlClient

__all__ = ["add_port_plug", "register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dhcp-agent", parents=[config_parent()],
        help="run the DHCP agent (qdhcp namespaces, dnsmasq, isolated-metadata proxies)",
    )
    p.set_defaults(func=_dhcp_agent)
    p = subparsers.add_parser(
        "l3-agent", parents=[config_parent()],
        help="run the L3 agent (qrouter namespaces, qr- ports, REDIRECT, proxies)",
    )
    p.set_defaults(func=_l3_agent)
    p = subparsers.add_parser(
        "l2-agent", parents=[config_parent()],
        help="run the L2 agent (brq bridges, flat/VLAN/VXLAN uplinks, flood lists)",
    )
    p.set_defaults(func=_l2_agent)
    add_port_plug(subparsers, "port-plug")


def _load(service: str, args: argparse.Namespace) -> ConfigOpts:
    from openimds.config import load_config

    conf = load_config(service, args.config_files, args.config_dirs)
    setup_logging(args.debug or bool(conf.debug))
    return conf


def _client(conf: ConfigOpts, service: str) -> ControlClient:
    """The agent's ControlClient (it owns and closes its session); call inside the running
    loop. A missing credential option exits with one line naming them all."""
    from openimds.control.client import MissingCredentials, control_client_from_conf

    try:
        return control_client_from_conf(conf, f"{service.replace('-', '_')}.ini [DEFAULT]")
    except MissingCredentials as exc:
        raise SystemExit(f"error: {exc}") from None


async def _run_agent(service: str, conf: ConfigOpts, build: Any) -> int:
    from openimds.control.report import report_state_loop
    from openimds.feed import ControlFeed

    client = _client(conf, service)
    reporter: asyncio.Task[None] | None = None
    try:
        agent = build(conf, ControlFeed(client))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        reporter = asyncio.create_task(report_state_loop(
            client, agent_report(service, conf, agent), float(conf.AGENT.report_interval),
            log_heartbeats=bool(conf.AGENT.log_agent_heartbeats)), name="report-state")
        await agent.run()
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await client.close()
    return 0


def agent_report(service: str, conf: ConfigOpts, agent: Any) -> Any:
    """What `service` reports to the agent registry (Neutron's agent_type and the
    configurations Neutron's agents show)."""
    from openimds.control.report import AgentReport
    from openimds.control.scheduling import DHCP_AGENT, L3_AGENT, LINUXBRIDGE_AGENT

    def count(resource: str) -> int:
        snap = agent.snapshot
        return snap.count(resource) if snap is not None else 0

    if service == "l2-agent":
        return AgentReport(LINUXBRIDGE_AGENT, conf.host, lambda: {
            "interface_mappings": dict(agent.options.physical_interface_mappings or {}),
            "bridge_mappings": {},
            "tunneling_ip": agent.options.local_ip or "",
            "tunnel_types": ["vxlan"] if agent.options.enable_vxlan else [],
            "l2_population": bool(conf.vxlan.l2_population),
            "devices": count("networks"), "synced_revision": agent.synced_revision()},
            availability_zone=None)
    if service == "dhcp-agent":
        return AgentReport(DHCP_AGENT, conf.host, lambda: {
            "dhcp_driver": "dnsmasq", "dhcp_lease_duration": int(conf.dhcp_lease_duration),
            "networks": count("networks"), "synced_revision": agent.synced_revision(),
            "metadata_next_hops": agent.vrrp_states(),
            "log_agent_heartbeats":
            bool(conf.AGENT.log_agent_heartbeats)},
            availability_zone=conf.AGENT.availability_zone)
    return AgentReport(L3_AGENT, conf.host, lambda: {
        "agent_mode": "legacy", "routers": count("routers"),
        "ha_routers": agent.ha_states(), "synced_revision": agent.synced_revision(),
        "log_agent_heartbeats": bool(conf.AGENT.log_agent_heartbeats)},
        availability_zone=conf.AGENT.availability_zone)


def _dhcp_agent(args: argparse.Namespace) -> int:
    from openimds.dhcp.agent import build_dhcp_agent

    return asyncio.run(_run_agent("dhcp-agent", _load("dhcp-agent", args), build_dhcp_agent))


def _l2_agent(args: argparse.Namespace) -> int:
    from openimds.l2.agent import build_l2_agent
    from openimds.l2.settings import l2_options_from_conf

    conf = _load("l2-agent", args)
    try:
        l2_options_from_conf(conf)
    except ValueError as exc:
        print(f"openimds l2-agent: {exc}", file=sys.stderr)
        return 2
    if not conf.vxlan.l2_population:
        logging.getLogger("openimds.l2-agent").warning(
            "[vxlan] l2_population = false: openimds has no multicast mode and uses the "
            "registry's flood lists anyway")
    return asyncio.run(_run_agent("l2-agent", conf, build_l2_agent))


def _l3_agent(args: argparse.Namespace) -> int:
    from openimds.l3.agent import build_l3_agent

    return asyncio.run(_run_agent("l3-agent", _load("l3-agent", args), build_l3_agent))


async def _fetch_port(
    conf: ConfigOpts, port_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    client = _client(conf, "dhcp-agent")
    try:
        port = await client.get("ports", port_id)
        subnets = await client.list("subnets", network_id=port["network_id"])
        network = await client.get("networks", port["network_id"])
    finally:
        await client.close()
    return port, subnets, int(network.get("mtu") or 1500)


def add_port_plug(subparsers: Any, name: str) -> None:
    """Register the plug command as `name`: `port-plug` here and `port plug` in the port group."""
    p = subparsers.add_parser(
        name, parents=[config_parent()],
        help="plug an instance port into a network namespace (tests and demos)",
    )
    p.add_argument("port", metavar="PORT", help="port id")
    p.add_argument("--netns", required=True, help="namespace for the far end (created)")
    p.add_argument("--ifname", default="eth0", help="device name in NETNS (default eth0)")
    p.add_argument(
        "--configure-ip", action="store_true",
        help="also add the port's fixed IPs and a default route via the subnet gateway",
    )
    p.set_defaults(func=_port_plug)


def static_config(
    port: dict[str, Any], subnets: list[dict[str, Any]]
) -> tuple[list[str], str | None]:
    """(["ip/prefix", ...], IPv4 gateway) for --configure-ip (pure)."""
    by_id = {s["id"]: s for s in subnets}
    cidrs, gateway = [], None
    for f in port.get("fixed_ips") or ():
        s = by_id.get(f["subnet_id"])
        if s is None:
            continue
        prefix = ipaddress.ip_network(s["cidr"], strict=False).prefixlen
        cidrs.append(f"{f['ip_address']}/{prefix}")
        if gateway is None and s.get("gateway_ip") and int(s.get("ip_version", 4)) == 4:
            gateway = s["gateway_ip"]
    return cidrs, gateway


def wrong_host(port: dict[str, Any], host: str) -> str | None:
    """Why `port` must not be plugged on `host` (pure); None when it may. A port bound to
    another host is that host's to plug: its l2-agent builds the bridge there."""
    bound = port.get("binding:host_id") or ""
    if bound and bound != host:
        return (f"port {port['id']} is bound to host {bound!r}, not to this host {host!r} "
                "([DEFAULT] host); run port plug on that host")
    return None


def _port_plug(args: argparse.Namespace) -> int:
    from openimds.linux.fabric import ensure_fabric, plug_port

    conf = _load("dhcp-agent", args)
    port, subnets, mtu = asyncio.run(_fetch_port(conf, args.port))
    refusal = wrong_host(port, conf.host)
    if refusal:
        print(f"openimds: {refusal}", file=sys.stderr)
        return 1
    fabric = ensure_fabric(conf.fabric_namespace or "")
    cidrs, gateway = static_config(port, subnets) if args.configure_ip else ([], None)
    plug_port(
        fabric, port["network_id"], port["id"], port["mac_address"], args.netns,
        ifname=args.ifname, mtu=mtu, addresses=cidrs, gateway=gateway,
    )
    print(f"plugged port {port['id']} ({port['mac_address']}) into {args.netns} as {args.ifname}",
          file=sys.stderr)
    return 0
