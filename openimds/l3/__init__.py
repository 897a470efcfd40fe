"""The L3 agent: per router, `qrouter-<router>` with its interfaces, iptables, keepalived (HA)
and the metadata proxy.

The surface is the package's modules, each with its own `__all__`: `model` (Neutron rows ->
plain values), `plan` and `ha` (pure: desired state, keepalived config), `apply` (observe,
diff, apply) and `agent` (the reconcile wiring). Nothing is re-exported here, for the reason
given in `openimds.dhcp`.
"""

__all__ = ["agent", "apply", "ha", "model", "plan"]
