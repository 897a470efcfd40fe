"""The EC2 and OpenStack trees of one instance, built by one pure function.

`render_tree(view, ...)` returns a `Tree` of `Dir` nodes whose leaves are already serialised
bytes, except for the few values nova makes per request (`random_seed`, the `local-ipv4`
fallback, dynamic vendordata, the password handler): those are small typed leaves that
`respond.py` completes. A rendered tree therefore depends only on the view, the date and the
process-wide options, which is what lets it be cached per instance until the view changes.

Listing rules (nova's `ec2_md_print`): sorted keys, directories as `key/`, a directory with a
label (`public-keys/0`) shown by its label (`0=keyname`), lines joined by `\n` with no trailing
newline. OpenStack listings are explicit because nova lists files it does not serve and serves
one (`network_data.json`) it does not list.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from openimds.metadata import versions as v
from openimds.metadata.aws import AWS_EC2_VERSIONS, AwsProfile, aws_dynamic, aws_meta_data
from openimds.metadata.errors import PathNotFound
from openimds.metadata.network_data import network_data
from openimds.metadata.view import InstanceView
from openimds.wire import STATIC_JSON

__all__ = [
    "HTML",
    "JSON",
    "TEXT",
    "Dir",
    "Leaf",
    "Node",
    "PasswordLeaf",
    "RequestAddressLeaf",
    "SeededJsonLeaf",
    "TextLeaf",
    "Tree",
    "VendorData2Leaf",
    "VendordataOptions",
    "ec2_version_listing",
    "format_listing",
    "lookup",
    "meta_data",
    "render_tree",
]

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"
# webob's default type; nova's password handler returns a bare string so it gets this.
HTML = "text/html; charset=UTF-8"



@dataclass(frozen=True, slots=True)
class TextLeaf:
    body: bytes
    content_type: str = TEXT


@dataclass(frozen=True, slots=True)
class SeededJsonLeaf:
    """meta_data.json split around `random_seed`, which must be fresh on every response."""

    prefix: bytes
    # None for versions before 2013-04-04, whose document has no random_seed.
    suffix: bytes | None

    @property
    def needs_seed(self) -> bool:
        return self.suffix is not None

    def body(self, seed: bytes) -> bytes:
        if self.suffix is None:
            return self.prefix
        return self.prefix + base64.b64encode(seed) + self.suffix


@dataclass(frozen=True, slots=True)
class RequestAddressLeaf:
    """EC2 `local-ipv4` of an instance without an IPv4 fixed IP: nova shows the caller address."""


@dataclass(frozen=True, slots=True)
class VendorData2Leaf:
    providers: tuple[str, ...]
    static: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class PasswordLeaf:
    current: str | None


Leaf = TextLeaf | SeededJsonLeaf | RequestAddressLeaf | VendorData2Leaf | PasswordLeaf


@dataclass(frozen=True, slots=True)
class Dir:
    children: Mapping[str, Node]
    listing: bytes
    # Shown in the parent's listing instead of `key/` (nova's `_name`, for public-keys/0).
    label: str | None = None


Node = Dir | Leaf


@dataclass(frozen=True, slots=True)
class Tree:
    root: Dir
    openstack: Dir


@dataclass(frozen=True)
class VendordataOptions:
    """`[api] vendordata_providers` and the StaticJSON document loaded at startup."""

    providers: tuple[str, ...] = (STATIC_JSON,)
    static: Mapping[str, Any] = field(default_factory=dict)


def format_listing(children: Mapping[str, Node]) -> bytes:
    """EC2 listing of a directory: sorted by code point, `key/` or the child's label."""
    lines = []
    for key in sorted(children):
        child = children[key]
        if isinstance(child, Dir):
            lines.append(child.label if child.label is not None else key + "/")
        else:
            lines.append(key)
    return "\n".join(lines).encode()


def _dir(children: dict[str, Node], label: str | None = None) -> Dir:
    return Dir(children=children, listing=format_listing(children), label=label)


def _text(value: object) -> TextLeaf:
    # Nova prints non-strings with str(): integers in decimal and a null as the text "None".
    if isinstance(value, bytes):
        return TextLeaf(value)
    if isinstance(value, list | tuple):
        return TextLeaf("\n".join(str(x) for x in value).encode())
    return TextLeaf(str(value).encode())


def ec2_version_listing(aws: bool = False) -> bytes:
    """The body of `/` and `/ec2`: the EC2 versions (with the AWS profile's), then `latest`."""
    extra = AWS_EC2_VERSIONS if aws else ()
    return "\n".join((*v.EC2_VERSIONS, *extra, "latest")).encode()


def _nodes(value: Any) -> Node:
    """Plain data (aws.py) as nodes: a dict is a directory, anything else a text leaf."""
    if isinstance(value, dict):
        return _dir({k: _nodes(val) for k, val in value.items()})
    return _text(value)


def _fqdn(hostname: str, dhcp_domain: str | None) -> str:
    return f"{hostname}.{dhcp_domain}" if dhcp_domain else hostname


def _block_device_mapping(view: InstanceView) -> dict[str, Node]:
    # Without block-device records, nova's mapping is the fixed one when the root device name
    # is unknown, and otherwise root plus `ami` (the root name without /dev/).
    if view.root_device_name is None:
        mapping = {"ami": "sda1", "ephemeral0": "sda2", "root": "/dev/sda1", "swap": "sda3"}
    else:
        root = view.root_device_name
        mapping = {"ami": root.removeprefix("/dev/"), "root": root}
    return {k: _text(val) for k, val in mapping.items()}


def _ec2_meta_data(view: InstanceView, dhcp_domain: str | None) -> dict[str, Node]:
    """Every meta-data entry the instance has, before the per-version filter."""
    fqdn = _fqdn(view.hostname, dhcp_domain)
    ipv4 = view.first_ipv4()
    ami = None if view.image_ec2_id is None else f"ami-{view.image_ec2_id:08x}"
    entries: dict[str, Node] = {
        "ami-id": _text(ami),
        "ami-launch-index": _text(view.launch_index),
        "ami-manifest-path": _text("FIXME"),
        "hostname": _text(fqdn),
        "instance-id": _text(f"i-{view.ec2_id:08x}"),
        "local-ipv4": _text(ipv4) if ipv4 is not None else RequestAddressLeaf(),
        "reservation-id": _text(view.reservation_id),
        "security-groups": _text(list(view.security_groups)),
        "local-hostname": _text(fqdn),
        "public-hostname": _text(fqdn),
        "public-ipv4": _text(view.first_floating_ip() or ""),
        "instance-type": _text(view.flavor),
        "block-device-mapping": _dir(_block_device_mapping(view)),
        "placement": _dir({"availability-zone": _text(view.availability_zone)}),
        "instance-action": _text("none"),
    }
    if view.key_name:
        key0 = _dir({"openssh-key": _text(view.key_data)}, label=f"0={view.key_name}")
        entries["public-keys"] = _dir({"0": key0})
    if view.kernel_ec2_id is not None:
        entries["kernel-id"] = _text(f"aki-{view.kernel_ec2_id:08x}")
    if view.ramdisk_ec2_id is not None:
        entries["ramdisk-id"] = _text(f"ari-{view.ramdisk_ec2_id:08x}")
    return entries


def _ec2_version_dirs(
    view: InstanceView, dhcp_domain: str | None, aws: AwsProfile | None, tags: bool
) -> dict[str, Node]:
    entries = _ec2_meta_data(view, dhcp_domain)
    out: dict[str, Node] = {}
    for version in v.EC2_VERSIONS:
        md = _dir({k: n for k, n in entries.items() if v.ec2_has(version, k)})
        children: dict[str, Node] = {"meta-data": md}
        if view.user_data is not None:
            children["user-data"] = TextLeaf(view.user_data)
        out[version] = _dir(children)
    out["latest"] = out[v.EC2_LATEST]
    if aws is None:
        return out
    # The AWS profile: Nova's newest keys plus AWS's, under the AWS dates and `latest`.
    extra = aws_meta_data(view, aws, _fqdn(view.hostname, dhcp_domain), tags=tags)
    aws_children: dict[str, Node] = {
        "meta-data": _dir({**entries, **{k: _nodes(val) for k, val in extra.items()}}),
        "dynamic": _nodes(aws_dynamic(view, aws)),
    }
    if view.user_data is not None:
        aws_children["user-data"] = TextLeaf(view.user_data)
    aws_dir = _dir(aws_children)
    for version in AWS_EC2_VERSIONS:
        out[version] = aws_dir
    out["latest"] = aws_dir
    return out


def meta_data(view: InstanceView, version: str, *, dhcp_domain: str | None) -> dict[str, Any]:
    """meta_data.json as an ordered dict, with `random_seed` holding an empty placeholder."""
    doc: dict[str, Any] = {"uuid": view.uuid}
    if view.metadata:
        doc["meta"] = dict(view.metadata)
    if view.key_name and view.keypair is not None:
        kp = view.keypair
        doc["public_keys"] = {kp.name: kp.public_key}
        doc["keys"] = [{"name": kp.name, "type": kp.type, "data": kp.public_key}]
    doc["hostname"] = _fqdn(view.hostname, dhcp_domain)
    doc["name"] = view.name
    doc["launch_index"] = view.launch_index
    doc["availability_zone"] = view.availability_zone
    if v.openstack_has(version, v.OS_RANDOM_SEED):
        doc["random_seed"] = ""
    if v.openstack_has(version, v.OS_PROJECT_ID):
        doc["project_id"] = view.project_id
    if v.openstack_has(version, v.OS_DEVICES):
        # No device metadata is recorded by the inventory (nova's `[]` for untagged devices).
        doc["devices"] = []
    if v.openstack_has(version, v.OS_DEDICATED_CPUS):
        doc["dedicated_cpus"] = sorted(view.dedicated_cpus)
    return doc


def _dumps_items(items: Sequence[tuple[str, Any]]) -> str:
    # Exactly json.dumps(dict(items)) with the default separators, but for a slice of the keys.
    return ", ".join(f"{json.dumps(k)}: {json.dumps(val)}" for k, val in items)


def _seeded_json(doc: dict[str, Any]) -> SeededJsonLeaf:
    items = list(doc.items())
    keys = [k for k, _ in items]
    if "random_seed" not in keys:
        return SeededJsonLeaf(prefix=json.dumps(doc).encode(), suffix=None)
    i = keys.index("random_seed")
    before, after = items[:i], items[i + 1 :]
    prefix = "{" + _dumps_items(before) + (", " if before else "") + '"random_seed": "'
    suffix = '"' + (", " + _dumps_items(after) if after else "") + "}"
    return SeededJsonLeaf(prefix=prefix.encode(), suffix=suffix.encode())


def _openstack_dir(
    view: InstanceView, today: date, dhcp_domain: str | None, vendordata: VendordataOptions
) -> Dir:
    net_leaf = TextLeaf(json.dumps(network_data(view)).encode())  # text/plain: nova's quirk
    static_leaf = TextLeaf(json.dumps(dict(vendordata.static)).encode(), JSON)
    vd2 = VendorData2Leaf(
        providers=vendordata.providers,
        static=vendordata.static if STATIC_JSON in vendordata.providers else None,
    )
    password = PasswordLeaf(view.password or None)
    # Versions whose meta_data.json is identical share one leaf (most of them do).
    seen: dict[bytes, SeededJsonLeaf] = {}
    versions: dict[str, Node] = {}
    for version in v.OPENSTACK_VERSIONS:
        md = _seeded_json(meta_data(view, version, dhcp_domain=dhcp_domain))
        md = seen.setdefault(md.prefix + b"\0" + (md.suffix or b""), md)
        files: dict[str, Node] = {"meta_data.json": md, "network_data.json": net_leaf}
        listing = ["meta_data.json"]
        if view.user_data is not None:
            files["user_data"] = TextLeaf(view.user_data)
            listing.append("user_data")
        if v.openstack_has(version, v.OS_PASSWORD):
            files["password"] = password
            listing.append("password")
        if v.openstack_has(version, v.OS_VENDOR_DATA):
            # Listed even when StaticJSON is off, and then a 404: nova does the same.
            if STATIC_JSON in vendordata.providers:
                files["vendor_data.json"] = static_leaf
            listing.append("vendor_data.json")
        if v.openstack_has(version, v.OS_NETWORK_DATA):
            listing.append("network_data.json")
        if v.openstack_has(version, v.OS_VENDOR_DATA2):
            files["vendor_data2.json"] = vd2
            listing.append("vendor_data2.json")
        versions[version] = Dir(children=files, listing="\n".join(listing).encode())
    versions["latest"] = versions[v.OPENSTACK_LATEST]
    return Dir(children=versions, listing="\n".join(v.openstack_listing(today)).encode())


def render_tree(
    view: InstanceView,
    *,
    today: date,
    dhcp_domain: str | None = "novalocal",
    vendordata: VendordataOptions | None = None,
    aws: AwsProfile | None = None,
    tags: bool = False,
) -> Tree:
    """Both trees of `view`. `today` (UTC) only decides which OpenStack versions are listed.

    `aws` selects the AWS profile (aws.py; None = Nova's EC2 tree byte for byte), `tags` the
    instance's `tags/instance/` directory in it.
    """
    vendordata = vendordata or VendordataOptions()
    ec2 = _ec2_version_dirs(view, dhcp_domain, aws, tags)
    root = Dir(children=ec2, listing=ec2_version_listing(aws is not None))
    return Tree(root=root, openstack=_openstack_dir(view, today, dhcp_domain, vendordata))


def lookup(tree: Tree, tokens: Sequence[str]) -> Node:
    """The node at `tokens` (a normalised path split on `/`), or PathNotFound.

    `openstack/...` walks the OpenStack tree; an `ec2` prefix is dropped; anything else is EC2.
    Paths below a leaf are 404 here, where nova raises a TypeError and answers 500.
    """
    tokens = list(tokens)
    if tokens and tokens[0] == "openstack":
        node: Node = tree.openstack
        tokens = tokens[1:]
    else:
        if tokens and tokens[0] == "ec2":
            tokens = tokens[1:]
        node = tree.root
        # Nova serves `//x` (two leading slashes survive normpath) as the bare EC2 root.
        if tokens and tokens[0] == "":
            return node
    for token in tokens:
        if not isinstance(node, Dir):
            raise PathNotFound()
        child = node.children.get(token)
        if child is None:
            if token == "_name" and node.label is not None:
                # Nova quirk kept for byte-compatibility: public-keys/0/_name shows the label.
                return TextLeaf(node.label.encode())
            raise PathNotFound()
        node = child
    return node
