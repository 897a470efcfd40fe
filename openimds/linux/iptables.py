"""iptables inside a namespace: read with iptables-save, write with iptables-restore --noflush.

The pure half (`parse_iptables_save`, `IptablesState`) turns `iptables-save` text into values
that `openimds.l3.plan.render_iptables_restore` compares with the desired rule set; the I/O half
(`save`, `restore`) only moves text in and out of a namespace. Whole-state: the caller always
renders the complete content of its own chains, never single `-A` calls (STYLE item 9).

Whatever `iptables` resolves to is used (nf_tables on these machines; legacy also works, see
MACHINE-NOTES). Mixing both in one namespace would make two live rule sets, so there is exactly
one binary name per family here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from openimds.linux.process import run

__all__ = [
    "BUILTIN_CHAINS",
    "IptablesState",
    "Rule",
    "SavedTable",
    "parse_iptables_save",
    "restore",
    "save",
]

# (table, chain, rule text as iptables-save prints it after "-A <chain> ")
Rule = tuple[str, str, str]

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


@dataclass(frozen=True)
class SavedTable:
    name: str
    chains: dict[str, str] = field(default_factory=dict)  # chain -> policy ("-" = user chain)
    rules: tuple[tuple[str, str], ...] = ()  # (chain, rule), in order

    def rules_in(self, chain: str) -> list[str]:
        return [r for c, r in self.rules if c == chain]


@dataclass(frozen=True)
class IptablesState:
    tables: dict[str, SavedTable] = field(default_factory=dict)

    def table(self, name: str) -> SavedTable:
        return self.tables.get(name) or SavedTable(name)

    def owned_chains(self, prefix: str) -> dict[str, list[str]]:
        """table -> chains whose name starts with `prefix`."""
        return {
            t.name: [c for c in t.chains if c.startswith(prefix)]
            for t in self.tables.values()
            if any(c.startswith(prefix) for c in t.chains)
        }

    def rules(self) -> list[Rule]:
        return [(t.name, c, r) for t in self.tables.values() for c, r in t.rules]


def parse_iptables_save(text: str) -> IptablesState:
    """Parse `iptables-save` (or `ip6tables-save`) output, with or without `-c` counters."""
    tables: dict[str, SavedTable] = {}
    name: str | None = None
    chains: dict[str, str] = {}
    rules: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name, chains, rules = line[1:], {}, []
        elif line == "COMMIT":
            if name is None:
                raise ValueError("COMMIT outside a table")
            tables[name] = SavedTable(name, chains, tuple(rules))
            name = None
        elif line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            chains[chain] = policy
        else:
            if line.startswith("["):  # "[pkts:bytes] -A ..." from iptables-save -c
                line = line.split("]", 1)[1].strip()
            if not line.startswith("-A "):
                raise ValueError(f"unexpected iptables-save line: {raw!r}")
            _, chain, *rest = line.split(" ", 2)
            rules.append((chain, rest[0] if rest else ""))
    if name is not None:
        raise ValueError(f"table {name} has no COMMIT")
    return IptablesState(tables)


def _binary(tool: str, ipv6: bool) -> str:
    return f"ip6{tool}" if ipv6 else f"ip{tool}"


def save(netns: str | None, *, ipv6: bool = False, tables: Iterable[str] = ()) -> IptablesState:
    """The namespace's current rules (only `tables` when given; all tables otherwise)."""
    names = list(tables)
    if not names:
        return parse_iptables_save(run([_binary("tables-save", ipv6)], netns=netns).stdout)
    parts = [run([_binary("tables-save", ipv6), "-t", t], netns=netns).stdout for t in names]
    return parse_iptables_save("\n".join(parts))


def restore(netns: str | None, text: str, *, ipv6: bool = False) -> None:
    """Apply restore text with --noflush: only the chains the text names change.

    The restore is one transaction: on any error nothing changes and CommandFailed is raised.
    Empty text is a no-op (the renderer returns "" when the namespace is already in sync).
    """
    if not text.strip():
        return
    run([_binary("tables-restore", ipv6), "-w", "10", "--noflush"], netns=netns, input=text)
