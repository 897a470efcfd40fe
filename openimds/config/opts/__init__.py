"""Option definitions, one module per concern.

Each option object is defined exactly once here and registered into every service that reads
it (see ``openimds.config.services``), so a shared option cannot drift between services.
"""

__all__ = [
    "agent",
    "common",
    "control_api",
    "dhcp",
    "guest",
    "l2",
    "l3",
    "metadata_api",
    "ml2",
    "proxy",
]
