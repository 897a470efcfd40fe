"""ControlFeed for the metadata agent: the change feed over the control-plane API
(`openimds.feed.ControlFeed`, where the client's errors are translated), built from the
agent's settings.

Authenticates with the seed's REST-era options (auth_url, admin_user, admin_password,
admin_tenant_name); the user needs the `service` or `admin` role to read the change feed.
"""

from __future__ import annotations

from openimds.agent.settings import AgentSettings
from openimds.control.client import MissingCredentials, check_credentials, control_client
from openimds.feed import ControlFeed as _ControlFeed

__all__ = ["ControlFeed", "MissingCredentials"]


_WHERE = "metadata_agent.ini [DEFAULT]"


class ControlFeed(_ControlFeed):
    """`openimds.feed.ControlFeed` plus the metadata agent's construction path."""

    @staticmethod
    def check_settings(settings: AgentSettings) -> None:
        """Raise MissingCredentials naming every option that is unset."""
        check_credentials(settings.auth_url, settings.username, settings.password,
                          settings.project_name, _WHERE)

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> ControlFeed:
        """Call inside the running event loop (the client's session binds to it). The agents'
        one construction path: credential check, TLS (auth_insecure, auth_ca_cert), region."""
        return cls(control_client(
            settings.auth_url, settings.username, settings.password, settings.project_name,
            region=settings.auth_region, insecure=settings.auth_insecure,
            ca_cert=settings.auth_ca_cert, where=_WHERE))
