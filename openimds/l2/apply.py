"""observe → diff → apply for one network's bridge and uplink on this host.

`diff_l2` is pure: from the plan and the observed links (plus the flood entries of the
network's VXLAN device) it returns typed actions; `L2Applier.apply` observes, diffs and runs
them through the verbs of `linux/segments.py`. Only links carrying our owner alias are ever
deleted; a mapped physical interface is enslaved and released, never deleted; the bridge goes
only when nothing but our uplink is left on it (a guest's tap keeps it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from openimds.l2.plan import L2Plan, PlanError
from openimds.linux import segments as seg
from openimds.linux.fabric import bridge_name
from openimds.linux.segments import SegmentLink

__all__ = ["Action", "L2Actual", "L2Applier", "diff_l2"]


@dataclass(frozen=True)
class Action:
    """One step: `verb` is a linux.segments verb, `args` its arguments after the namespace
    (typed values, no string dispatch)."""

    verb: Callable[..., None]
    args: tuple[Any, ...]

    def __str__(self) -> str:
        return f"{self.verb.__name__}{self.args}"


@dataclass(frozen=True)
class L2Actual:
    links: tuple[SegmentLink, ...]
    flood: frozenset[str] = frozenset()  # flood entries on the network's VXLAN device

    def link(self, name: str) -> SegmentLink | None:
        return next((x for x in self.links if x.name == name), None)


def _uplink_matches(link: SegmentLink, plan: L2Plan) -> bool:
    up = plan.uplink
    if up.kind == "vxlan":
        return (link.kind == "vxlan" and link.vni == up.segmentation_id
                and link.local_ip == up.local_ip and link.dstport == up.dstport)
    if up.kind == "vlan":
        return link.kind == "vlan" and link.vlan_id == up.segmentation_id \
            and link.parent == up.parent
    return True


def diff_l2(network_id: str, plan: L2Plan | None, actual: L2Actual) -> list[Action]:
    if plan is None:
        return _teardown(network_id, actual)
    out: list[Action] = []
    bridge = actual.link(plan.bridge)
    if bridge is not None and bridge.kind != "bridge":
        raise PlanError(f"{plan.bridge} exists and is a {bridge.kind}, not a bridge")
    if bridge is None or bridge.owner != network_id or bridge.mtu != plan.mtu or not bridge.up:
        out.append(Action(seg.create_bridge, (plan.bridge, network_id, plan.mtu)))
    # Our links of this network that the plan no longer names (e.g. a re-created device).
    wanted = {plan.bridge, plan.uplink.name}
    for other in actual.links:
        if other.owner == network_id and other.name not in wanted:
            out.append(Action(seg.delete_link, (other.name,)))
    up = plan.uplink
    link: SegmentLink | None = actual.link(up.name)
    flood: frozenset[str] = actual.flood
    if up.kind == "flat":
        if link is None:
            raise PlanError(f"physical interface {up.name} (flat uplink of {network_id}) "
                            "does not exist on this host")
    elif link is not None and not _uplink_matches(link, plan):
        if link.owner is None:
            raise PlanError(f"{up.name} exists with other settings and is not ours; "
                            "not touching it")
        out.append(Action(seg.delete_link, (up.name,)))
        link, flood = None, frozenset()
    if link is None and up.kind == "vxlan":
        out.append(Action(seg.create_vxlan, (up.name, up.segmentation_id, up.local_ip,
                                           up.dstport, network_id, plan.mtu)))
    elif link is None and up.kind == "vlan":
        out.append(Action(seg.create_vlan, (up.name, up.parent, up.segmentation_id,
                                          network_id, plan.mtu)))
    if link is None or link.master != plan.bridge or not link.up:
        out.append(Action(seg.set_master, (up.name, plan.bridge)))
    if up.kind == "vxlan":
        for remote in sorted(set(up.peers) - flood):
            out.append(Action(seg.add_flood_entry, (up.name, remote)))
        for remote in sorted(flood - set(up.peers)):
            out.append(Action(seg.delete_flood_entry, (up.name, remote)))
    return out


def _teardown(network_id: str, actual: L2Actual) -> list[Action]:
    brq = bridge_name(network_id)
    out: list[Action] = []
    removed: set[str] = set()
    for link in actual.links:
        if link.owner == network_id and link.kind != "bridge":
            out.append(Action(seg.delete_link, (link.name,)))
            removed.add(link.name)
        elif link.master == brq and link.owner is None and link.kind is None:
            # A mapped physical interface (flat uplink): release it, never delete it.
            out.append(Action(seg.set_nomaster, (link.name,)))
            removed.add(link.name)
    bridge = actual.link(brq)
    if bridge is not None and bridge.owner == network_id:
        others = [x.name for x in actual.links if x.master == brq and x.name not in removed]
        if not others:
            out.append(Action(seg.delete_link, (brq,)))
    return out


class L2Applier:
    """Observe, diff and apply in one namespace (the host's own, attached under a name)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns

    def observe(self, network_id: str, plan: L2Plan | None) -> L2Actual:
        links = tuple(seg.observe_segment_links(self.netns))
        flood: frozenset[str] = frozenset()
        if plan is not None and plan.uplink.kind == "vxlan":
            dev = next((x for x in links if x.name == plan.uplink.name), None)
            if dev is not None and dev.kind == "vxlan":
                flood = frozenset(seg.flood_entries(self.netns, dev.name))
        return L2Actual(links, flood)

    def apply(self, network_id: str, plan: L2Plan | None,
              log: logging.LoggerAdapter[Any] | logging.Logger) -> Sequence[Action]:
        actions = diff_l2(network_id, plan, self.observe(network_id, plan))
        for action in actions:
            log.info("apply %s", action)
            action.verb(self.netns, *action.args)
        return actions

    def owned_networks(self) -> set[str]:
        return {x.owner for x in seg.observe_segment_links(self.netns) if x.owner}
