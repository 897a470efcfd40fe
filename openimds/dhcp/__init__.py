"""The DHCP agent: per network, dnsmasq and the metadata proxy in `qdhcp-<network>`.

The surface is the package's modules, each with its own `__all__`: `model` (Neutron rows ->
plain values), `plan` (pure: desired state), `apply` (observe, diff, apply), `vrrp`, and
`agent` (the reconcile wiring). Nothing is re-exported here: the pure modules are imported by
processes that never run the agent (the control API reads `plan`), and an eager `__init__`
would load the agent's dependencies into each of them.
"""

__all__ = ["agent", "apply", "model", "plan", "vrrp"]
