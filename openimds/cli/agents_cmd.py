"""`openimds network agent list|show|set|delete` and the neutron spellings `agent-list`,
`agent-show`, `agent-update`, `agent-delete` (the agent registry, `/v2.0/agents`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register_legacy", "register_network_agent"]

# openstack's --agent-type values -> Neutron's agent_type
AGENT_TYPES = {"dhcp": "DHCP agent", "l3": "L3 agent", "metadata": "Metadata agent",
               "linux-bridge": "Linux bridge agent"}


def _list(api: Any, args: argparse.Namespace) -> Any:
    from openimds.cli.client_cmd import CliError, find

    if getattr(args, "long", False) and not getattr(args, "router", None):
        raise CliError("--long is only valid with --router")
    if getattr(args, "router", None):
        # openstack's `network agent list --router R`: the router's L3 agents, with each
        # one's HA state (`--long` shows it in the table).
        router = find(api, "routers", args.router)
        body = api.request("GET", "network", f"/v2.0/routers/{router['id']}/l3-agents")
        return list(body["agents"])
    filters: dict[str, Any] = {}
    if getattr(args, "agent_type", None):
        filters["agent_type"] = AGENT_TYPES[args.agent_type]
    if getattr(args, "host", None):
        filters["host"] = args.host
    return api.list("agents", **filters)


def _show(api: Any, args: argparse.Namespace) -> Any:
    return api.get("agents", args.agent)


def _set(api: Any, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {}
    if args.admin_state_up is not None:
        body["admin_state_up"] = args.admin_state_up
    if args.description is not None:
        body["description"] = args.description
    result = api.update("agents", args.agent, body)
    return result if args.show else None


def _delete(api: Any, args: argparse.Namespace) -> None:
    for aid in args.agents:
        api.delete("agents", aid)


def _add_network(api: Any, args: argparse.Namespace) -> None:
    from openimds.cli.client_cmd import find

    network = find(api, "networks", args.network)
    api.request("POST", "network", f"/v2.0/agents/{args.agent}/dhcp-networks",
                {"network_id": network["id"]})


def _remove_network(api: Any, args: argparse.Namespace) -> None:
    from openimds.cli.client_cmd import find

    network = find(api, "networks", args.network)
    api.request("DELETE", "network", f"/v2.0/agents/{args.agent}/dhcp-networks/{network['id']}")


def _set_flags(p: argparse.ArgumentParser) -> None:
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="admin_state_up", action="store_const", const=True,
                       default=None, help="admin_state_up true (schedulable)")
    state.add_argument("--disable", dest="admin_state_up", action="store_const", const=False,
                       help="admin_state_up false (no new networks, routers or servers)")
    p.add_argument("--description")


def register_network_agent(network_verbs: argparse._SubParsersAction[argparse.ArgumentParser], leaf: Any) -> None:
    """`network agent VERB` under the `network` group; `leaf` is client_cmd._leaf."""
    verbs = network_verbs.add_parser("agent", help="agents (registry)").add_subparsers(
        metavar="VERB")
    p = leaf(verbs, "list", _list, "agents", "list agents")
    p.add_argument("--agent-type", choices=sorted(AGENT_TYPES))
    p.add_argument("--host")
    p.add_argument("--router", help="only the L3 agents hosting this router (name or id)")
    p.add_argument("--long", action="store_true",
                   help="with --router: also the HA State column")
    leaf(verbs, "show", _show, "agents", "show an agent").add_argument("agent",
                                                                       help="agent id")
    p = leaf(verbs, "set", _set, "agents", "enable, disable or describe an agent")
    p.add_argument("agent", help="agent id")
    _set_flags(p)
    p.set_defaults(show=False)
    leaf(verbs, "delete", _delete, "agents", "delete dead agents").add_argument(
        "agents", nargs="+", help="agent ids")
    for verb, handler, what in (("add", _add_network, "schedule a network to a DHCP agent"),
                                ("remove", _remove_network,
                                 "remove a network from a DHCP agent")):
        nouns = verbs.add_parser(verb, help=what).add_subparsers(metavar="NOUN")
        p = leaf(nouns, "network", handler, "agents", what)
        p.add_argument("--dhcp", action="store_true", default=True,
                       help="a DHCP agent (the only kind of network agent)")
        p.add_argument("agent", help="agent id")
        p.add_argument("network", help="network name or id")


def register_legacy(sub: argparse._SubParsersAction[argparse.ArgumentParser], leaf: Any) -> None:
    p = leaf(sub, "agent-list", _list, "agents", "list agents (neutron spelling)")
    p.add_argument("--agent-type", choices=sorted(AGENT_TYPES))
    p.add_argument("--host")
    leaf(sub, "agent-show", _show, "agents", "show an agent").add_argument("agent")
    p = leaf(sub, "agent-update", _set, "agents", "update an agent (neutron spelling)")
    p.add_argument("agent")
    p.add_argument("--admin-state-down", dest="admin_state_up", action="store_const",
                   const=False, default=None)
    p.add_argument("--admin-state-up", dest="admin_state_up", action="store_const",
                   const=True)
    p.add_argument("--description")
    p.set_defaults(show=True)
    leaf(sub, "agent-delete", _delete, "agents", "delete dead agents").add_argument(
        "agents", nargs="+")
