"""The metadata API: pure rendering of nova's EC2/OpenStack trees plus the server around it.

Public surface (everything else is internal to the package); see docs/metadata.md.

The renderer and the server's names (`respond`, `tree`) are loaded on first use (PEP 562):
other processes import small pure modules of this package (the control-api reads
`metadata.options`), and an eager `__init__` would load the whole server (aiohttp's client,
the renderers) into each of them, about 30 MB of RSS in a process that never serves
metadata. The small modules stay eager; `identify` must, as its function shares the name of
its module (a later `import openimds.metadata.identify` would otherwise bind the module here).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from openimds.metadata.errors import MetadataError
from openimds.metadata.identify import IdentifySettings, identify
from openimds.metadata.source import AddressMatch, DictSource, InstanceSource, PasswordResult
from openimds.metadata.view import FixedIPView, InstanceView, KeyPairView, PortView, SubnetView

if TYPE_CHECKING:
    from openimds.metadata.respond import (
        MetadataRequest,
        MetadataResponse,
        Responder,
        RespondSettings,
    )
    from openimds.metadata.tree import VendordataOptions, lookup, render_tree

# lazily loaded public name -> the module that defines it
_WHERE = {
    "MetadataRequest": "respond",
    "MetadataResponse": "respond",
    "Responder": "respond",
    "RespondSettings": "respond",
    "VendordataOptions": "tree",
    "lookup": "tree",
    "render_tree": "tree",
}

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
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        # AttributeError lets `from openimds.metadata import <submodule>` import it.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
