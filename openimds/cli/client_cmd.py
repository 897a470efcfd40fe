"""Client commands of `openimds`: talk to the control-plane API like `openstack`/`neutron` do.

Noun-verb commands (`network create|list|show|delete`, `subnet ...`, `router ... | router add
subnet R S`, `port ...`, `server ...`, `keypair ...`) and the seeds' legacy spellings
(`net-create`, `subnet-create [--no-gateway] [--name S] NET CIDR`, `router-create`,
`router-interface-add ROUTER SUBNET`, ...). Credentials come from OS_AUTH_URL, OS_USERNAME,
OS_PASSWORD and OS_PROJECT_NAME (or the matching --os-* flags). Names or ids are accepted
wherever an id is taken. Output is a table, or the API's JSON with `-f json`. An API error
prints the server's message and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from openimds.cli import server_metadata_cmd
from openimds.cli.common import config_parent

Handler = Callable[[Any, argparse.Namespace], Any]


class CliError(Exception):
    """A problem worth one line on stderr and exit status 1."""


# ---- plumbing ---------------------------------------------------------------------------------


def client_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-f", "--format", choices=("table", "json"), default="table",
                        help="output format (json for scripts)")
    parent.add_argument("--os-auth-url", default=None, help="default: $OS_AUTH_URL")
    parent.add_argument("--os-username", default=None, help="default: $OS_USERNAME")
    parent.add_argument("--os-password", default=None, help="default: $OS_PASSWORD")
    parent.add_argument("--os-project-name", default=None, help="default: $OS_PROJECT_NAME")
    parent.add_argument("--os-region-name", default=None, help="default: $OS_REGION_NAME")
    return parent


def _credentials(args: argparse.Namespace) -> dict[str, Any]:
    def pick(flag: str | None, env: str) -> str | None:
        return flag if flag is not None else os.environ.get(env)

    values = {
        "auth_url": pick(args.os_auth_url, "OS_AUTH_URL"),
        "username": pick(args.os_username, "OS_USERNAME"),
        "password": pick(args.os_password, "OS_PASSWORD"),
        "project_name": pick(args.os_project_name, "OS_PROJECT_NAME")
        or os.environ.get("OS_TENANT_NAME"),
    }
    missing = [k for k, v in values.items() if not v]
    if missing:
        names = {"auth_url": "OS_AUTH_URL", "username": "OS_USERNAME",
                 "password": "OS_PASSWORD", "project_name": "OS_PROJECT_NAME"}
        raise CliError("missing credentials: set " + ", ".join(names[m] for m in missing)
                       + " (or source the openrc file)")
    values["region"] = pick(args.os_region_name, "OS_REGION_NAME")
    return values


def _runner(handler: Handler, kind: str) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler: build the client, translate errors, print the result."""

    def run(args: argparse.Namespace) -> int:
        from openimds.control.client import ApiConnectionError, ApiError, SyncControlClient

        try:
            creds = _credentials(args)
            with SyncControlClient(**creds) as api:
                result = handler(api, args)
        except ApiError as exc:
            print(f"openimds: {exc.message}", file=sys.stderr)
            return 1
        except (ApiConnectionError, CliError, OSError) as exc:
            print(f"openimds: {exc}", file=sys.stderr)
            return 1
        # `--long` lists show the kind's long columns where it has them (agents: HA State).
        long_kind = f"{kind}_long"
        _print(result, long_kind if getattr(args, "long", False) and long_kind in LIST_COLUMNS
               else kind, args.format)
        return 0

    return run


def _leaf(verbs: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler, kind: str,
          help: str) -> argparse.ArgumentParser:
    parser = verbs.add_parser(name, parents=[config_parent(), client_parent()], help=help)
    parser.set_defaults(func=_runner(handler, kind))
    return parser


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def find(api: Any, resource: str, value: str) -> dict[str, Any]:
    """The one `resource` whose id or name is `value`."""
    from openimds.control.client import ApiError

    singular = resource.rstrip("s")
    if is_uuid(value):
        try:
            return dict(api.get(resource, value))
        except ApiError as exc:
            if exc.status != 404:
                raise
    if resource == "servers":
        matches = [s for s in api.list("servers") if s["name"] == value]
    else:
        matches = api.list(resource, name=value)
    if not matches:
        raise CliError(f"No {singular} with a name or ID of '{value}' exists.")
    if len(matches) > 1:
        raise CliError(f"More than one {singular} exists with the name '{value}'; use its ID.")
    return dict(matches[0])


def _kv(text: str, what: str) -> dict[str, str]:
    """`a=1,b=2` -> {"a": "1", "b": "2"}."""
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CliError(f"invalid {what} {text!r}: expected key=value[,key=value]")
        out[key.strip()] = value.strip()
    return out


# ---- output -------------------------------------------------------------------------------------

LIST_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "networks": [("ID", "id"), ("Name", "name"), ("Subnets", "subnets")],
    "subnets": [("ID", "id"), ("Name", "name"), ("Network", "network_id"), ("Subnet", "cidr"),
                ("Gateway", "gateway_ip")],
    "ports": [("ID", "id"), ("Name", "name"), ("MAC Address", "mac_address"),
              ("Fixed IP Addresses", "fixed_ips"), ("Device Owner", "device_owner"),
              ("Status", "status")],
    "routers": [("ID", "id"), ("Name", "name"), ("Status", "status"),
                ("State", "admin_state_up"), ("Project", "project_id")],
    "servers": [("ID", "id"), ("Name", "name"), ("Status", "status"),
                ("Networks", "addresses"), ("Image", "image"), ("Flavor", "flavor")],
    "keypairs": [("Name", "name"), ("Fingerprint", "fingerprint"), ("Type", "type")],
    "agents": [("ID", "id"), ("Agent Type", "agent_type"), ("Host", "host"),
               ("Availability Zone", "availability_zone"), ("Alive", "alive"),
               ("State", "admin_state_up"), ("Binary", "binary")],
    "agents_long": [("ID", "id"), ("Agent Type", "agent_type"), ("Host", "host"),
                    ("Availability Zone", "availability_zone"), ("Alive", "alive"),
                    ("State", "admin_state_up"), ("Binary", "binary"),
                    ("HA State", "ha_state")],
    "token_usage": [("Server", "server_id"), ("Name", "name"), ("HTTP Tokens", "http_tokens"),
                    ("Tokenless", "tokenless_requests"),
                    ("Invalid Token", "invalid_token_requests"),
                    ("Last Tokenless", "last_tokenless_at")],
}


def _cell(key: str, value: Any) -> str:
    if key == "fixed_ips" and isinstance(value, list):
        return "\n".join(f"ip_address='{f['ip_address']}', subnet_id='{f['subnet_id']}'"
                         for f in value)
    if key == "addresses" and isinstance(value, dict):
        return "; ".join(f"{net}={', '.join(a['addr'] for a in addrs)}"
                         for net, addrs in value.items())
    if key == "alive" and isinstance(value, bool):
        return ":-)" if value else "XXX"  # as openstackclient prints it
    if key == "admin_state_up" and isinstance(value, bool):
        return "UP" if value else "DOWN"
    if key == "flavor" and isinstance(value, dict):
        return str(value.get("original_name", ""))
    if key == "image" and isinstance(value, dict):
        return str(value.get("name", ""))
    if isinstance(value, list):
        return "\n".join(_cell("", v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "None"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An ASCII table like python-openstackclient's (multi-line cells allowed)."""
    split = [[c.split("\n") for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule, "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
           + " |", rule]
    for row in split:
        height = max(len(lines) for lines in row)
        for n in range(height):
            out.append("| " + " | ".join((lines[n] if n < len(lines) else "").ljust(w)
                                         for lines, w in zip(row, widths, strict=True)) + " |")
    out.append(rule)
    return "\n".join(out)


def _print(result: Any, kind: str, fmt: str) -> None:
    if result is None:
        return
    if fmt == "json":
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    if isinstance(result, list):
        columns = LIST_COLUMNS[kind]
        print(table([c[0] for c in columns],
                    [[_cell(key, item.get(key)) for _, key in columns] for item in result]))
    else:
        print(table(["Field", "Value"], [[k, _cell(k, v)] for k, v in sorted(result.items())]))


# ---- networks -------------------------------------------------------------------------------


def _network_create(api: Any, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"name": args.name, "admin_state_up": not args.disable,
                            **_provider_body(args)}
    if args.share:
        body["shared"] = True
    return api.create("networks", body)


def add_provider_flags(p: argparse.ArgumentParser) -> None:
    """The segment flags, in openstack's spelling and neutron's (`--provider:network_type`)."""
    p.add_argument("--provider-network-type", "--provider:network_type",
                   dest="provider_network_type", metavar="TYPE",
                   choices=("local", "flat", "vlan", "vxlan"),
                   help="segment type (admin): local, flat, vlan or vxlan")
    p.add_argument("--provider-physical-network", "--provider:physical_network",
                   dest="provider_physical_network", metavar="PHYSNET",
                   help="physical network of a flat or vlan segment (admin)")
    p.add_argument("--provider-segment", "--provider:segmentation_id",
                   dest="provider_segment", metavar="ID", type=int,
                   help="VLAN id or VXLAN VNI (admin)")


def _provider_body(args: argparse.Namespace) -> dict[str, Any]:
    pairs = (("provider:network_type", args.provider_network_type),
             ("provider:physical_network", args.provider_physical_network),
             ("provider:segmentation_id", args.provider_segment))
    return {k: v for k, v in pairs if v is not None}


def _deleter(resource: str) -> Handler:
    def handler(api: Any, args: argparse.Namespace) -> None:
        for value in args.names:
            # Key pairs are addressed by name in Nova; everything else by id.
            api.delete(resource, value if resource == "keypairs" else
                       find(api, resource, value)["id"])

    return handler


def _shower(resource: str) -> Handler:
    def handler(api: Any, args: argparse.Namespace) -> Any:
        if resource == "keypairs":
            return api.get("keypairs", args.name)
        return find(api, resource, args.name)

    return handler


@dataclass(frozen=True)
class CliResource:
    """One resource of the client CLI: its openstack noun, its API collection (also the output
    kind), and its neutron prefix where the seeds' spelling has one (`net-list`)."""

    noun: str
    collection: str
    legacy: str | None = None
    # The neutron spelling's verbs; `port-delete` and friends are not in the seeds.
    legacy_verbs: tuple[str, ...] = ("list", "show", "delete")

    @property
    def plural(self) -> str:
        return "key pairs" if self.collection == "keypairs" else self.collection


CLI_RESOURCES: dict[str, CliResource] = {r.noun: r for r in (
    CliResource("network", "networks", legacy="net"),
    CliResource("subnet", "subnets", legacy="subnet"),
    CliResource("router", "routers", legacy="router"),
    CliResource("port", "ports", legacy="port", legacy_verbs=("list", "show")),
    CliResource("server", "servers"),
    CliResource("keypair", "keypairs"),
)}


def _plain_list(resource: str) -> Handler:
    return lambda api, args: api.list(resource)


def _read_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser], res: CliResource, *, legacy: bool = False,
                list_handler: Handler | None = None, show_handler: Handler | None = None,
                ) -> dict[str, argparse.ArgumentParser]:
    """`list`, `show` and `delete` of one resource, in one spelling: `network list` under the
    noun's parser, or `net-list` at the top level (`legacy`). Both spellings come from here,
    so they cannot drift apart. Returns the leaf parsers, for extra flags."""
    names = res.legacy_verbs if legacy else ("list", "show", "delete")
    singular = res.plural.rstrip("s")
    leaves: dict[str, argparse.ArgumentParser] = {}
    for verb in names:
        name = f"{res.legacy}-{verb}" if legacy else verb
        if verb == "list":
            leaves[verb] = _leaf(verbs, name, list_handler or _plain_list(res.collection),
                                 res.collection, f"list {res.plural}")
        elif verb == "show":
            leaves[verb] = _leaf(verbs, name, show_handler or _shower(res.collection),
                                 res.collection, f"show a {singular}")
            leaves[verb].add_argument("name")
        else:
            leaves[verb] = _leaf(verbs, name, _deleter(res.collection), res.collection,
                                 f"delete {res.plural}")
            leaves[verb].add_argument("names", nargs="+")
    return leaves


def _noun(sub: argparse._SubParsersAction[argparse.ArgumentParser], res: CliResource) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    return sub.add_parser(res.noun, help=res.plural).add_subparsers(metavar="VERB")


def _register_network(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs = _noun(sub, CLI_RESOURCES["network"])
    p = _leaf(verbs, "create", _network_create, "networks", "create a network")
    p.add_argument("name")
    p.add_argument("--share", action="store_true", help="visible to every project (admin)")
    p.add_argument("--disable", action="store_true", help="admin_state_up false")
    add_provider_flags(p)
    _read_verbs(verbs, CLI_RESOURCES["network"])
    from openimds.cli.agents_cmd import register_network_agent

    register_network_agent(verbs, _leaf)


# ---- subnets --------------------------------------------------------------------------------


def subnet_body(network_id: str, cidr: str, *, name: str = "", no_gateway: bool = False,
                gateway: str | None = None, dhcp: bool = True, ip_version: int | None = None,
                host_routes: Sequence[str] = (), dns: Sequence[str] = (),
                pools: Sequence[str] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"network_id": network_id, "cidr": cidr, "name": name,
                            "enable_dhcp": dhcp}
    if ip_version is not None:
        body["ip_version"] = ip_version
    if no_gateway:
        body["gateway_ip"] = None
    elif gateway is not None:
        body["gateway_ip"] = None if gateway == "none" else gateway
    if host_routes:
        routes = []
        for text in host_routes:
            kv = _kv(text, "--host-route")
            if set(kv) != {"destination", "gateway"}:
                raise CliError("--host-route takes destination=CIDR,gateway=IP")
            routes.append({"destination": kv["destination"], "nexthop": kv["gateway"]})
        body["host_routes"] = routes
    if dns:
        body["dns_nameservers"] = list(dns)
    if pools:
        body["allocation_pools"] = [_kv(p, "--allocation-pool") for p in pools]
    return body


def _subnet_create(api: Any, args: argparse.Namespace) -> Any:
    network = find(api, "networks", args.network)
    body = subnet_body(
        network["id"], args.subnet_range, name=args.name, no_gateway=args.no_gateway,
        gateway=args.gateway, dhcp=not args.no_dhcp, ip_version=args.ip_version,
        host_routes=args.host_route, dns=args.dns_nameserver, pools=args.allocation_pool)
    for key in ("ipv6_ra_mode", "ipv6_address_mode"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    return api.create("subnets", body)


def _subnet_list(api: Any, args: argparse.Namespace) -> Any:
    filters = {}
    if args.network:
        filters["network_id"] = find(api, "networks", args.network)["id"]
    return api.list("subnets", **filters)


def _register_subnet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs = _noun(sub, CLI_RESOURCES["subnet"])
    p = _leaf(verbs, "create", _subnet_create, "subnets", "create a subnet")
    p.add_argument("name")
    p.add_argument("--network", required=True, help="network name or id")
    p.add_argument("--subnet-range", required=True, metavar="CIDR")
    gw = p.add_mutually_exclusive_group()
    gw.add_argument("--no-gateway", action="store_true", help="no gateway IP")
    gw.add_argument("--gateway", metavar="IP", help="gateway IP (default: first host)")
    p.add_argument("--no-dhcp", action="store_true", help="enable_dhcp false")
    p.add_argument("--dhcp", action="store_false", dest="no_dhcp", help="enable_dhcp (default)")
    _add_subnet_shape_flags(p)
    for flag in ("--ipv6-ra-mode", "--ipv6-address-mode"):
        p.add_argument(flag, choices=("slaac", "dhcpv6-stateless", "dhcpv6-stateful"))
    leaves = _read_verbs(verbs, CLI_RESOURCES["subnet"], list_handler=_subnet_list)
    leaves["list"].add_argument("--network", help="only this network's subnets")


def _add_subnet_shape_flags(p: argparse.ArgumentParser) -> None:
    """The subnet flags both spellings share (`subnet create` and `subnet-create`)."""
    p.add_argument("--ip-version", type=int, choices=(4, 6), default=None)
    p.add_argument("--host-route", action="append", default=[],
                   metavar="destination=CIDR,gateway=IP")
    p.add_argument("--dns-nameserver", action="append", default=[], metavar="IP")
    p.add_argument("--allocation-pool", action="append", default=[], metavar="start=IP,end=IP")


# ---- routers --------------------------------------------------------------------------------


def _router_interface(action: str, by: str) -> Handler:
    def handler(api: Any, args: argparse.Namespace) -> Any:
        router = find(api, "routers", args.router)
        target = find(api, "subnets" if by == "subnet" else "ports", args.target)
        return api.router_interface(router["id"], action, **{f"{by}_id": target["id"]})

    return handler


def _router_create(api: Any, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"name": args.name}
    if args.ha is not None:
        body["ha"] = args.ha
    return api.create("routers", body)


def _register_router(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs = _noun(sub, CLI_RESOURCES["router"])
    p = _leaf(verbs, "create", _router_create, "routers", "create a router")
    p.add_argument("name")
    ha = p.add_mutually_exclusive_group()
    ha.add_argument("--ha", dest="ha", action="store_const", const=True, default=None,
                    help="highly available router (admin; default: [DEFAULT] l3_ha)")
    ha.add_argument("--no-ha", dest="ha", action="store_const", const=False,
                    help="legacy router on one L3 agent (admin)")
    _read_verbs(verbs, CLI_RESOURCES["router"])
    for action in ("add", "remove"):
        what = verbs.add_parser(action, help=f"{action} a router interface").add_subparsers(
            metavar="subnet|port")
        for by in ("subnet", "port"):
            leaf = _leaf(what, by, _router_interface(action, by), "routers",
                         f"{action} the router interface on a {by}")
            leaf.add_argument("router", help="router name or id")
            leaf.add_argument("target", help=f"{by} name or id")


# ---- ports ----------------------------------------------------------------------------------


def _fixed_ips(entries: Sequence[str], api: Any) -> list[dict[str, str]]:
    out = []
    for text in entries:
        kv = _kv(text, "--fixed-ip")
        entry = {}
        if "subnet" in kv:
            entry["subnet_id"] = find(api, "subnets", kv.pop("subnet"))["id"]
        if "ip-address" in kv:
            entry["ip_address"] = kv.pop("ip-address")
        if kv or not entry:
            raise CliError("--fixed-ip takes subnet=SUBNET[,ip-address=IP] or ip-address=IP")
        out.append(entry)
    return out


def _port_create(api: Any, args: argparse.Namespace) -> Any:
    network = find(api, "networks", args.network)
    body: dict[str, Any] = {"network_id": network["id"], "name": args.name}
    if args.fixed_ip:
        body["fixed_ips"] = _fixed_ips(args.fixed_ip, api)
    for key in ("mac_address", "device_id", "device_owner"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    return api.create("ports", body)


def _port_list(api: Any, args: argparse.Namespace) -> Any:
    filters: dict[str, Any] = {}
    if args.network:
        filters["network_id"] = find(api, "networks", args.network)["id"]
    if args.device_id:
        filters["device_id"] = args.device_id
    if args.device_owner:
        filters["device_owner"] = args.device_owner
    if args.fixed_ip:
        filters["fixed_ips"] = [f"ip_address={ip}" for ip in args.fixed_ip]
    return api.list("ports", **filters)


def _register_port(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs = _noun(sub, CLI_RESOURCES["port"])
    p = _leaf(verbs, "create", _port_create, "ports", "create a port")
    p.add_argument("name")
    p.add_argument("--network", required=True)
    p.add_argument("--fixed-ip", action="append", default=[],
                   metavar="subnet=SUBNET,ip-address=IP")
    p.add_argument("--mac-address")
    p.add_argument("--device-id")
    p.add_argument("--device-owner")
    ls = _read_verbs(verbs, CLI_RESOURCES["port"], list_handler=_port_list)["list"]
    ls.add_argument("--network")
    ls.add_argument("--device-id")
    ls.add_argument("--device-owner")
    ls.add_argument("--fixed-ip", action="append", default=[], metavar="IP",
                    help="only ports holding this address")
    # `port plug` is a node-local action (veths in the fabric), owned by the network agents' CLI.
    from openimds.cli.network_agents_cmd import add_port_plug

    add_port_plug(verbs, "plug")


# ---- servers --------------------------------------------------------------------------------


def _server_networks(api: Any, args: argparse.Namespace) -> list[dict[str, str]]:
    nets: list[dict[str, str]] = []
    for i, name in enumerate(args.network):
        entry = {"uuid": find(api, "networks", name)["id"]}
        # --fixed-ip pairs with the --network of the same position.
        if i < len(args.fixed_ip):
            entry["fixed_ip"] = args.fixed_ip[i]
        nets.append(entry)
    if len(args.fixed_ip) > len(args.network):
        raise CliError("each --fixed-ip needs a --network before it")
    for port in args.port:
        nets.append({"port": find(api, "ports", port)["id"]})
    for nic in args.nic:
        kv = _kv(nic, "--nic")
        if "port-id" in kv:
            nets.append({"port": find(api, "ports", kv["port-id"])["id"]})
        elif "net-id" in kv:
            entry = {"uuid": find(api, "networks", kv["net-id"])["id"]}
            ip = kv.get("v4-fixed-ip") or kv.get("v6-fixed-ip")
            if ip:
                entry["fixed_ip"] = ip
            nets.append(entry)
        else:
            raise CliError("--nic takes net-id=NET[,v4-fixed-ip=IP] or port-id=PORT")
    return nets


def _server_create(api: Any, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"name": args.name, "networks": _server_networks(api, args) or "none"}
    if args.user_data:
        with open(args.user_data, "rb") as fh:
            body["user_data"] = base64.b64encode(fh.read()).decode("ascii")
    if args.property:
        body["metadata"] = {}
        for text in args.property:
            key, sep, value = text.partition("=")
            if not sep or not key:
                raise CliError(f"invalid --property {text!r}: expected key=value")
            body["metadata"][key] = value
    for flag, key in (("key_name", "key_name"), ("availability_zone", "availability_zone"),
                      ("flavor", "flavorRef"), ("image", "imageRef"), ("host", "host")):
        if getattr(args, flag):
            body[key] = getattr(args, flag)
    md_options = server_metadata_cmd.options_from_args(args)
    if md_options:
        body["openimds:metadata_options"] = md_options
    return api.create("servers", body)


def _register_server(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs = _noun(sub, CLI_RESOURCES["server"])
    p = _leaf(verbs, "create", _server_create, "servers", "create a server")
    p.add_argument("name")
    p.add_argument("--network", action="append", default=[], help="network name or id")
    p.add_argument("--fixed-ip", action="append", default=[], metavar="IP",
                   help="address on the --network at the same position")
    p.add_argument("--port", action="append", default=[], help="existing port name or id")
    p.add_argument("--nic", action="append", default=[],
                   metavar="net-id=NET,v4-fixed-ip=IP|port-id=PORT")
    p.add_argument("--user-data", metavar="FILE")
    p.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--key-name")
    p.add_argument("--availability-zone", help="zone, or zone:HOST to choose the host (admin)")
    p.add_argument("--host", help="compute host to bind the server's ports to (admin); "
                                  "default: the alive compute host with the fewest ports")
    p.add_argument("--flavor")
    p.add_argument("--image")
    server_metadata_cmd.add_option_flags(p)
    leaves = _read_verbs(
        verbs, CLI_RESOURCES["server"], show_handler=server_metadata_cmd.show_server,
        list_handler=lambda api, a: api.list(
            "servers", **({"all_tenants": "True"} if a.all_projects else {})))
    leaves["list"].description = "your project's servers; --all-projects for admins"
    leaves["list"].add_argument("--all-projects", action="store_true",
                                help="every project's servers (admins and services)")
    server_metadata_cmd.register_server_verbs(verbs, _leaf)


# ---- key pairs ------------------------------------------------------------------------------


def _keypair_create(api: Any, args: argparse.Namespace) -> Any:
    if not args.public_key:
        raise CliError("openimds imports public keys only: pass --public-key FILE")
    with open(os.path.expanduser(args.public_key), encoding="utf-8") as fh:
        key = fh.read().strip()
    return api.create("keypairs", {"name": args.name, "public_key": key})


def _register_keypair(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs = _noun(sub, CLI_RESOURCES["keypair"])
    p = _leaf(verbs, "create", _keypair_create, "keypairs", "import a public key")
    p.add_argument("name")
    p.add_argument("--public-key", metavar="FILE")
    _read_verbs(verbs, CLI_RESOURCES["keypair"])


# ---- the legacy neutron spellings of the seeds ------------------------------------------------


def _legacy_subnet_create(api: Any, args: argparse.Namespace) -> Any:
    network = find(api, "networks", args.network)
    return api.create("subnets", subnet_body(
        network["id"], args.cidr, name=args.name or "", no_gateway=args.no_gateway,
        gateway=args.gateway_ip, dhcp=not args.disable_dhcp, ip_version=args.ip_version,
        host_routes=args.host_route, dns=args.dns_nameserver, pools=args.allocation_pool))


def _legacy_interface(action: str) -> Handler:
    def handler(api: Any, args: argparse.Namespace) -> Any:
        router = find(api, "routers", args.router)
        # neutron's INTERFACE is a subnet by default, or `subnet=X` / `port=X`.
        kind, sep, value = args.interface.partition("=")
        if not sep:
            kind, value = "subnet", args.interface
        if kind not in ("subnet", "port"):
            raise CliError("INTERFACE is SUBNET, subnet=SUBNET or port=PORT")
        target = find(api, "subnets" if kind == "subnet" else "ports", value)
        return api.router_interface(router["id"], action, **{f"{kind}_id": target["id"]})

    return handler


def _register_legacy(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from openimds.cli.agents_cmd import register_legacy

    register_legacy(sub, _leaf)
    p = _leaf(sub, "net-create",
              lambda api, a: api.create("networks", {"name": a.name, **_provider_body(a)}),
              "networks", "create a network (neutron spelling)")
    p.add_argument("name")
    add_provider_flags(p)

    p = _leaf(sub, "subnet-create", _legacy_subnet_create, "subnets",
              "create a subnet (neutron spelling: NETWORK CIDR)")
    p.add_argument("network")
    p.add_argument("cidr")
    p.add_argument("--name")
    gw = p.add_mutually_exclusive_group()
    gw.add_argument("--no-gateway", action="store_true")
    gw.add_argument("--gateway", "--gateway-ip", dest="gateway_ip")
    p.add_argument("--disable-dhcp", action="store_true")
    p.add_argument("--enable-dhcp", action="store_false", dest="disable_dhcp")
    _add_subnet_shape_flags(p)

    p = _leaf(sub, "router-create", lambda api, a: api.create("routers", {"name": a.name}),
              "routers", "create a router (neutron spelling)")
    p.add_argument("name")
    for name, action in (("router-interface-add", "add"), ("router-interface-delete", "remove")):
        p = _leaf(sub, name, _legacy_interface(action), "routers",
                  f"{action} a router interface (neutron spelling: ROUTER INTERFACE)")
        p.add_argument("router")
        p.add_argument("interface", help="SUBNET, subnet=SUBNET or port=PORT")
    for res in CLI_RESOURCES.values():
        if res.legacy is not None:
            _read_verbs(sub, res, legacy=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_network(subparsers)
    _register_subnet(subparsers)
    _register_router(subparsers)
    _register_port(subparsers)
    _register_server(subparsers)
    _register_keypair(subparsers)
    _register_legacy(subparsers)
