"""Network namespaces and per-namespace sysctls: idempotent verbs over iproute2.

"Already exists" and "not found" are success for ensure/delete. We never parse error text:
each verb observes (`ip -j netns list`), acts only when needed, and re-observes on failure, so a
concurrent creator or deleter does not turn into an error.
"""

from __future__ import annotations

import json

from openimds.linux.process import CommandFailed, run

__all__ = [
    "BRIDGE_NF_CALL_IPTABLES",
    "delete_netns",
    "ensure_netns",
    "get_sysctl",
    "list_netns",
    "netns_exists",
    "set_bridge_nf_call",
    "set_sysctl",
]

BRIDGE_NF_CALL_IPTABLES = "net.bridge.bridge-nf-call-iptables"
BRIDGE_NF_CALL_IP6TABLES = "net.bridge.bridge-nf-call-ip6tables"


def list_netns(prefix: str = "") -> list[str]:
    """Names of the named namespaces (those under /run/netns) starting with `prefix`."""
    text = run(["ip", "-j", "netns", "list"]).stdout.strip()
    names = [d["name"] for d in json.loads(text)] if text else []
    return sorted(n for n in names if n.startswith(prefix))


def netns_exists(name: str) -> bool:
    return name in list_netns(name)


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid namespace name {name!r}")


def ensure_netns(name: str) -> None:
    """Create the namespace if missing, and bring its loopback up (needed for local binds)."""
    _check_name(name)
    if not netns_exists(name):
        try:
            run(["ip", "netns", "add", name])
        except CommandFailed:
            if not netns_exists(name):  # lost a race with another creator: fine
                raise
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete_netns(name: str) -> None:
    """Remove the namespace name; absent is success.

    Caveats (MACHINE-NOTES, netns-plumbing.md gotchas 8-9): a process still inside keeps the
    namespace alive, so stop those first; and its devices vanish asynchronously, so delete veths
    explicitly (links.delete_link) before reusing their names.
    """
    _check_name(name)
    if not netns_exists(name):
        return
    try:
        run(["ip", "netns", "delete", name])
    except CommandFailed:
        if netns_exists(name):
            raise


def get_sysctl(netns: str, key: str) -> str | None:
    """The value inside the namespace, or None when the key does not exist there."""
    proc = run(["sysctl", "-n", key], netns=netns, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def set_sysctl(netns: str, key: str, value: str | int) -> None:
    """Set a sysctl inside the namespace (never the host's: netns is required)."""
    _check_name(netns)
    if get_sysctl(netns, key) == str(value):
        return
    run(["sysctl", "-q", "-w", f"{key}={value}"], netns=netns)


def set_bridge_nf_call(netns: str, enabled: bool) -> bool:
    """Set bridge-nf-call-ip(6)tables in the namespace; False when br_netfilter is not loaded.

    New namespaces get 1 when br_netfilter is loaded, so bridged traffic would cross that
    namespace's iptables FORWARD chain; fabric namespaces set it to 0 explicitly.
    """
    present = False
    for key in (BRIDGE_NF_CALL_IPTABLES, BRIDGE_NF_CALL_IP6TABLES):
        if get_sysctl(netns, key) is not None:
            set_sysctl(netns, key, int(enabled))
            present = True
    return present
