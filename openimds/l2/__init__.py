"""The L2 agent: per network, the bridge and its uplink (VXLAN, VLAN or flat) on this host,
and the `qmeta-<network>` namespace of distributed metadata.

The surface is the package's modules, each with its own `__all__`: `plan` (pure: desired
bridge and uplink), `apply` (observe, diff, apply), `metadata` (the distributed metadata
namespace) and `agent` (the reconcile wiring). Nothing is re-exported here, for the reason
given in `openimds.dhcp`.
"""

__all__ = ["agent", "apply", "metadata", "plan"]
