"""`/v2.0/networks`: list, show, create, update, delete."""

from __future__ import annotations

from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openimds.control import segments
from openimds.control.call import Call, Reply, get_bool, get_str, resource_body
from openimds.control.context import scoped
from openimds.control.errors import BadRequest, Conflict, Forbidden
from openimds.control.ports import shared_network
from openimds.control.resources import (
    ListSpec,
    get_visible,
    list_collection,
    owner_project,
    parse_filters,
)
from openimds.control.serializers import network_dict, select_fields
from openimds.inventory import errors as inv
from openimds.inventory.models import Network, Port, RevisionCounter, Subnet
from openimds.wire import DHCP_OWNER, DISTRIBUTED_OWNER, METADATA_OWNER

LIST_SPEC = ListSpec(
    model=Network,
    columns={
        "id": Network.id, "name": Network.name, "tenant_id": Network.project_id,
        "project_id": Network.project_id, "admin_state_up": Network.admin_state_up,
        "shared": Network.shared, "provider:network_type": Network.network_type,
        "provider:physical_network": Network.physical_network,
        "provider:segmentation_id": Network.segmentation_id,
    },
    bool_columns=frozenset({"admin_state_up", "shared"}),
    attributes=frozenset({"mtu", "status", "subnets", "router:external", "description",
                          "availability_zones",
                          "created_at", "updated_at"}),
)

CREATE_FIELDS = ("name", "admin_state_up", "shared", "mtu", "tenant_id", "project_id",
                 "description", "router:external", "port_security_enabled",
                 *segments.PROVIDER_KEYS)
UPDATE_FIELDS = ("name", "admin_state_up", "shared", "mtu", "description",
                 *segments.PROVIDER_KEYS)
# Neutron's default MTU of a VXLAN network: a 1500-byte underlay minus the 50-byte VXLAN/IPv4
# overhead, so guests never send frames the underlay drops.
VXLAN_MTU = 1450


def _mtu(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise BadRequest(f"Invalid input for mtu: '{value!r}' is not an integer in 68..65535",
                         type="InvalidInput")
    return value


def list_networks(call: Call) -> Reply:
    filters = parse_filters(call, LIST_SPEC)
    stmt = scoped(select(Network), Network, call.context, shared=shared_network())
    for cond in filters.sql.values():
        stmt = stmt.where(cond)
    stmt = stmt.options(selectinload(Network.subnets))
    with call.store.read() as s:
        return Reply(200, list_collection(
            call, s, stmt, model=Network, order=(Network.created_at, Network.id),
            serialize=lambda n: network_dict(n, provider=call.context.reads_all),
            filters=filters, collection="networks", path="/v2.0/networks", kind="Network"))


def show_network(call: Call) -> Reply:
    with call.store.read() as s:
        net = get_visible(s, Network, call.params["id"], call.context, "Network",
                          shared=shared_network())
        return Reply(200, {"network": select_fields([network_dict(
            net, provider=call.context.reads_all)],
                                                    call.query_values("fields"))[0]})


def create_network(call: Call) -> Reply:
    obj = resource_body(call.body, "network", CREATE_FIELDS)
    ctx = call.context
    name = get_str(obj, "name")
    admin_up = get_bool(obj, "admin_state_up", True)
    shared = get_bool(obj, "shared", False)
    mtu = _mtu(obj.get("mtu", 1500))
    description = get_str(obj, "description", max_len=1024)
    get_bool(obj, "port_security_enabled", True)
    if get_bool(obj, "router:external", False):
        raise BadRequest("External networks are not supported by openimds.",
                         type="InvalidInput")
    if shared and not ctx.is_admin:
        raise Forbidden("Only an admin may create a shared network.")
    requested = segments.requested_segment(obj)
    if requested is not None and not ctx.is_admin:
        raise Forbidden("Only an admin may set provider:network_type, "
                        "provider:physical_network or provider:segmentation_id.")
    config = call.settings.segments

    def attempt() -> Reply:
        with call.store.session() as s:
            # Take the revision counter's row lock (every write takes it at commit anyway)
            # before reading the ids in use: concurrent creates on PostgreSQL then pick one
            # after the other instead of colliding on the same free id.
            s.execute(select(RevisionCounter.value).where(RevisionCounter.id == 1)
                      .with_for_update())
            seg = segments.allocate(requested, config, partial(_used_ids, s))
            if seg.key is not None and s.scalar(
                    select(Network.id).where(Network.segment_key == seg.key)) is not None:
                raise segments.in_use(seg)
            net = Network(project_id=owner_project(s, ctx, obj), name=name,
                          admin_state_up=admin_up, shared=shared,
                          mtu=VXLAN_MTU if seg.network_type == "vxlan" and "mtu" not in obj
                          else mtu,
                          network_type=seg.network_type, physical_network=seg.physical_network,
                          segmentation_id=seg.segmentation_id, segment_key=seg.key,
                          description=description)
            s.add(net)
            s.flush()
            return Reply(201, {"network": network_dict(net, provider=ctx.reads_all)})

    # A concurrent create may take the id we picked between our read and our commit (the unique
    # segment_key refuses the second): pick again; a segment the admin named is simply in use.
    for _ in range(4):
        try:
            return attempt()
        except inv.SegmentInUse:
            if requested is not None and requested.segmentation_id is not None \
                    or requested is not None and requested.network_type == "flat":
                raise segments.in_use(requested) from None
    raise segments.no_network_available()


def _used_ids(s: Session, network_type: str, physical_network: str | None) -> list[int]:
    stmt = select(Network.segmentation_id).where(Network.network_type == network_type,
                                                 Network.segmentation_id.is_not(None))
    if physical_network is not None:
        stmt = stmt.where(Network.physical_network == physical_network)
    return [v for v in s.scalars(stmt) if v is not None]


def update_network(call: Call) -> Reply:
    obj = resource_body(call.body, "network", UPDATE_FIELDS)
    ctx = call.context
    with call.store.session() as s:
        net = get_visible(s, Network, call.params["id"], ctx, "Network", write=True)
        current = segments.provider_fields(net.network_type, net.physical_network,
                                           net.segmentation_id)
        if any(k in obj and obj[k] != current[k] for k in segments.PROVIDER_KEYS):
            raise BadRequest("Invalid input for operation: Plugin does not support updating "
                             "provider attributes.", type="InvalidInput")
        if "name" in obj:
            net.name = get_str(obj, "name")
        if "admin_state_up" in obj:
            net.admin_state_up = get_bool(obj, "admin_state_up", True)
        if "shared" in obj:
            shared = get_bool(obj, "shared", False)
            if shared != net.shared and not ctx.is_admin:
                raise Forbidden("Only an admin may share or unshare a network.")
            net.shared = shared
        if "mtu" in obj:
            net.mtu = _mtu(obj["mtu"])
        if "description" in obj:
            net.description = get_str(obj, "description", max_len=1024)
        s.flush()
        return Reply(200, {"network": network_dict(net, provider=ctx.reads_all)})


def delete_network(call: Call) -> Reply:
    with call.store.session() as s:
        net = get_visible(s, Network, call.params["id"], call.context, "Network", write=True)
        ports = list(s.scalars(select(Port).where(Port.network_id == net.id)))
        busy = [p for p in ports
                if p.device_owner not in (DHCP_OWNER, DISTRIBUTED_OWNER, METADATA_OWNER)]
        if busy:
            raise Conflict(f"Unable to complete operation on network {net.id}. There are one "
                           f"or more ports still in use on the network "
                           f"({', '.join(p.id for p in busy[:5])}).", type="NetworkInUse")
        # What the network owns itself (its DHCP, distributed metadata and metadata next hop
        # ports, then its subnets) goes with it.
        for port in ports:
            s.delete(port)
        s.flush()
        for subnet in s.scalars(select(Subnet).where(Subnet.network_id == net.id)):
            s.delete(subnet)
        s.flush()
        s.delete(net)
    return Reply(204)
