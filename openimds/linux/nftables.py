"""nftables: load a whole ruleset text in a namespace with one `nft -f` (atomic: all or none).

The text comes from a pure renderer (openimds.portsec.rules) and carries its own
`table ...; delete table ...` preamble, so loading it replaces what it owns and nothing else.
"""

from __future__ import annotations

from openimds.linux.process import run

__all__ = ["apply_ruleset"]


def apply_ruleset(netns: str, text: str) -> None:
    """`nft -f -` inside `netns`; CommandFailed carries nft's own error (line and column)."""
    if not netns:
        raise ValueError("refusing to load an nftables ruleset without a namespace name")
    run(["nft", "-f", "-"], netns=netns, input=text)
