"""The guest surface AWS-era clients expect (issue 13): session tokens, metadata option
defaults, the EC2 profile, the region and the signed identity document.

Read by the metadata API (all of them) and the control plane (the option defaults it shows in
`server show`, the identity certificate it publishes).
"""

from __future__ import annotations

from oslo_config import cfg

region_name = cfg.StrOpt(
    "region_name",
    default="RegionOne",
    help="Region of this cloud: EC2 placement/region and the identity document's region.",
)
DEFAULT_OPTS: list[cfg.Opt] = [region_name]

token_secret = cfg.StrOpt(
    "token_secret",
    default="",
    secret=True,
    help="Key session tokens (PUT /latest/api/token) are issued with; the same on every "
    "metadata API replica. Empty = derived from [neutron] metadata_proxy_shared_secret.",
)
token_previous_secrets = cfg.ListOpt(
    "token_previous_secrets",
    default=[],
    secret=True,
    help="Earlier token_secret values still accepted (rotation): keep an old one here for at "
    "least 6 hours (the longest token TTL) after changing token_secret.",
)
http_tokens = cfg.StrOpt(
    "http_tokens",
    default="optional",
    choices=["optional", "required"],
    help="Cloud-wide default: required = requests without a session token get 401.",
)
http_put_response_hop_limit = cfg.IntOpt(
    "http_put_response_hop_limit",
    default=1,
    min=1,
    max=64,
    help="Cloud-wide default IP TTL / hop limit of the token PUT's answer.",
)
http_endpoint = cfg.StrOpt(
    "http_endpoint",
    default="enabled",
    choices=["enabled", "disabled"],
    help="Cloud-wide default: disabled = every metadata request gets 403.",
)
instance_metadata_tags = cfg.StrOpt(
    "instance_metadata_tags",
    default="disabled",
    choices=["enabled", "disabled"],
    help="Cloud-wide default: enabled = meta-data/tags/instance/<key> from the server's "
    "metadata key/value pairs.",
)
http_protocol_ipv6 = cfg.StrOpt(
    "http_protocol_ipv6",
    default="enabled",
    choices=["enabled", "disabled"],
    help="Cloud-wide default: whether an instance may use the IPv6 metadata address.",
)
ec2_profile = cfg.StrOpt(
    "ec2_profile",
    default="aws",
    choices=["aws", "nova"],
    help="aws = the keys and versions AWS clients read (placement/region, network/interfaces, "
    "dynamic/instance-identity, ...) plus the token API; nova = Nova's EC2 tree byte for "
    "byte and no token API.",
)
identity_key_file = cfg.StrOpt(
    "identity_key_file",
    help="PEM RSA private key that signs dynamic/instance-identity (signature, pkcs7, "
    "rsa2048). Unset = those three documents are not served.",
)
identity_cert_file = cfg.StrOpt(
    "identity_cert_file",
    help="PEM certificate of identity_key_file: embedded in pkcs7/rsa2048 and published by "
    "the control plane at /v2.1/os-metadata-identity-certificate.",
)
METADATA_OPTS: list[cfg.Opt] = [
    token_secret, token_previous_secrets, http_tokens, http_put_response_hop_limit,
    http_endpoint, instance_metadata_tags, http_protocol_ipv6, ec2_profile,
    identity_key_file, identity_cert_file,
]
