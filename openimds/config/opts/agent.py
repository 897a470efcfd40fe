"""The metadata agent (metadata_agent.ini) and the credentials every agent uses.

The REST-era Keystone options (auth_url, admin_user, ...) were removed from Neutron in
Mitaka, but openimds agents do authenticate to the control-plane API with them, so they are
current options here, without a deprecation warning.
"""

from __future__ import annotations

import socket

from oslo_config import cfg, types


class HostAddressList(types.String):
    """One host address, or several separated by commas (each checked like HostAddressOpt);
    the value stays the comma-joined text, so one host reads exactly as before."""

    def __init__(self) -> None:
        super().__init__(type_name="host address list")
        self._host = types.HostAddress()

    def __call__(self, value: str) -> str:
        hosts = [h.strip() for h in str(value).split(",")]
        if not all(hosts):
            raise ValueError(f"empty host name in {value!r}")
        return ",".join(self._host(h) for h in hosts)


class URIList(types.String):
    """One http(s) URI, or several separated by commas (each checked like URIOpt)."""

    def __init__(self) -> None:
        super().__init__(type_name="URI list")
        self._uri = types.URI(schemes=["http", "https"])

    def __call__(self, value: str) -> str:
        uris = [u.strip() for u in str(value).split(",")]
        if not all(uris):
            raise ValueError(f"empty URI in {value!r}")
        return ",".join(self._uri(u) for u in uris)


nova_metadata_host = cfg.Opt(
    "nova_metadata_host",
    type=HostAddressList(),
    default="127.0.0.1",
    deprecated_name="nova_metadata_ip",
    help="Host of the metadata API; openimds: several hosts separated by commas (replicas "
    "on nova_metadata_port, failed over in order, health-aware).",
)
nova_metadata_port = cfg.PortOpt("nova_metadata_port", default=8775,
                                 help="Port of the metadata API.")
nova_metadata_protocol = cfg.StrOpt(
    "nova_metadata_protocol", default="http", choices=["http", "https"],
    help="Scheme used to reach the metadata API.",
)
nova_metadata_insecure = cfg.BoolOpt(
    "nova_metadata_insecure", default=False, help="Skip TLS verification of the metadata API."
)
nova_metadata_urls = cfg.ListOpt(
    "nova_metadata_urls",
    item_type=types.URI(schemes=["http", "https"]),
    default=[],
    help="openimds: metadata API base URLs tried in order (failover); when set it replaces "
    "nova_metadata_host/port/protocol.",
)
# In AUTH_OPTS: every agent verifies the control-plane API with it; the metadata agent
# also verifies the metadata API (Neutron's meaning).
auth_ca_cert = cfg.StrOpt("auth_ca_cert", help="CA file to verify the metadata API (and auth_url).")
nova_client_cert = cfg.StrOpt("nova_client_cert", default="",
                              help="Client certificate for the metadata API.")
nova_client_priv_key = cfg.StrOpt("nova_client_priv_key", default="",
                                  help="Private key of nova_client_cert.")
metadata_proxy_shared_secret_agent = cfg.StrOpt(
    "metadata_proxy_shared_secret",
    default="",
    secret=True,
    help="HMAC key; must equal the metadata API's [neutron] metadata_proxy_shared_secret.",
)
metadata_backlog = cfg.IntOpt("metadata_backlog", default=4096, min=1,
                              help="Listen backlog of the agent's unix socket.")

metadata_agent_scope = cfg.StrOpt(
    "metadata_agent_scope", default="cloud", choices=("cloud", "host"),
    help="Which ports this metadata agent resolves. cloud: every port (a network node). host: "
         "only ports bound to [DEFAULT] host, the compute-host agent of metadata_mode = "
         "distributed (a request for an address bound elsewhere gets 404).")

METADATA_AGENT_OPTS: list[cfg.Opt] = [
    nova_metadata_host, nova_metadata_port, nova_metadata_protocol, nova_metadata_insecure,
    nova_metadata_urls, nova_client_cert, nova_client_priv_key,
    metadata_proxy_shared_secret_agent, metadata_backlog, metadata_agent_scope,
]

# How every agent authenticates to the control-plane API.
AUTH_OPTS: list[cfg.Opt] = [
    auth_ca_cert,
    cfg.Opt("auth_url", type=URIList(),
            help="Identity endpoint of the control-plane API (/v2.0 or /v3 form); openimds: "
                 "several control-api replicas separated by commas, failed over in order."),
    cfg.StrOpt("auth_region", help="Region to pick from the service catalog."),
    cfg.StrOpt("admin_tenant_name", help="Project the agent's token is scoped to."),
    cfg.StrOpt("admin_user", help="The agent's user."),
    cfg.StrOpt("admin_password", secret=True, help="The agent's password."),
    cfg.BoolOpt("auth_insecure", default=False, help="Skip TLS verification of auth_url."),
    cfg.StrOpt("endpoint_type", default="adminURL",
               choices=["adminURL", "internalURL", "publicURL"],
               help="Which catalog endpoint of the control-plane API to use."),
]

AGENT_STATE_OPTS: list[cfg.Opt] = [
    cfg.FloatOpt("report_interval", default=30, min=0,
                 help="Seconds between agent state reports (0 = off)."),
    cfg.BoolOpt("log_agent_heartbeats", default=False, help="Log every state report."),
    cfg.StrOpt("availability_zone", default="nova",
               help="Availability zone the agent reports (shown by the DHCP and L3 agents)."),
]

# [DEFAULT] of every agent (several hosts): the name it registers under. Port bindings
# (binding:host_id) and the scheduler speak of hosts by this name.
HOST_OPTS: list[cfg.Opt] = [
    cfg.HostAddressOpt("host", default=socket.gethostname(), sample_default="<hostname>",
                       help="Name of this host in the agent registry and in port bindings "
                            "(binding:host_id)."),
]
