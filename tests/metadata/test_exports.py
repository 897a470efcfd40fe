"""Pin the package's public names, so a change to the surface is a deliberate one."""

import openimds.metadata as metadata


def test_exported_members() -> None:
    assert sorted(metadata.__all__) == sorted(
        [
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
    )
    for name in metadata.__all__:
        assert getattr(metadata, name).__module__.startswith("openimds.metadata.")
