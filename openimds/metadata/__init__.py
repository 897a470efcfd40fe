"""The metadata API: pure rendering of nova's EC2/OpenStack trees plus the server around it.

Public surface (everything else is internal to the package); see docs/metadata.md.
"""

from openimds.metadata.errors import MetadataError
from openimds.metadata.identify import IdentifySettings, identify, sign_instance_id
from openimds.metadata.respond import MetadataRequest, MetadataResponse, Responder, RespondSettings
from openimds.metadata.source import AddressMatch, DictSource, InstanceSource, PasswordResult
from openimds.metadata.tree import VendordataOptions, lookup, render_tree
from openimds.metadata.view import FixedIPView, InstanceView, KeyPairView, PortView, SubnetView

__all__ = [
    "AddressMatch",
    "DictSource",
    "FixedIPView",
    "IdentifySettings",
    "InstanceSource",
    "InstanceView",
    "KeyPairView",
    "MetadataError",
    "MetadataRequest",
    "MetadataResponse",
    "PasswordResult",
    "PortView",
    "RespondSettings",
    "Responder",
    "SubnetView",
    "VendordataOptions",
    "identify",
    "lookup",
    "render_tree",
    "sign_instance_id",
]
