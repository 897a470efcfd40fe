"""Map mode: the metadata agent keeps every namespace proxy's identity map current.

    MapKeeper(index, state_path, secret).run()      until cancelled
    MapKeeper.changed(networks | None)               IndexSync's hook after each applied batch

Level-triggered, per proxy (STYLE items 6-7): the proxies in map mode are the configs under
`<state_path>/ns-metadata-proxy/` that carry an `# identity-map:` line (the DHCP, L3 and L2
agents write them). For each, `maps.desired_map` (pure) is what the map must hold; the map file
is rewritten atomically when it differs (a haproxy that starts or reloads loads it), and then the
running map is read back over the admin socket (`show map`), diffed and edited (`add`/`set`/`del
map`), so a port change reaches the guest without any reload. While the last update succeeded
and the file still holds it, the running map is known and only the edits are sent; haproxy is
asked (`show map`) for a new proxy, after a failure and every `verify_interval`.

A proxy is worked on when it is new, when a change touched one of its networks, when its map
file is not the one the keeper last wrote (a proxy stopped and started again has a new, empty
one), when its last attempt failed, and every `verify_interval` seconds regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from openimds.agent.index import PortIndex
from openimds.agent.maps import (
    MapTarget,
    desired_map,
    diff_map,
    map_file_text,
    map_target,
    scope_networks,
)
from openimds.linux.files import read_text, write_atomic
from openimds.proxy.haproxy import config_path
from openimds.proxy.runtime_api import RuntimeApi, RuntimeApiError, RuntimeApiUnavailable

__all__ = ["MapKeeper"]

LOG = logging.getLogger("openimds.agent.maps")


@dataclass
class _Kept:
    target: MapTarget
    networks: frozenset[str] = frozenset()
    pushed: dict[str, str] | None = None  # what the running map was last made equal to
    verified_at: float = 0.0
    failing: bool = False
    file_id: tuple[int, int] | None = None  # (inode, mtime) of the map file last written/seen


@dataclass
class MapKeeper:
    index: PortIndex
    state_path: str
    secret: str
    # How often the config folder is scanned for new or removed proxies.
    scan_interval: float = 1.0
    verify_interval: float = 30.0
    passes: int = 0
    _kept: dict[str, _Kept] = field(default_factory=dict)
    _touched: set[str] | None = field(default_factory=set)  # None = everything
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _scanned: dict[str, tuple[int, int, MapTarget | None]] = field(default_factory=dict)

    def status(self) -> dict[str, int]:
        """For /healthz: proxies in map mode, those whose running map is not known to be
        current (haproxy unreachable or refusing), and passes run."""
        return {"proxies": len(self._kept),
                "not_current": sum(1 for k in self._kept.values()
                                   if k.failing or k.pushed is None),
                "passes": self.passes}

    def changed(self, networks: set[str] | None) -> None:
        """The index changed on these networks (None: a full resync, all of them)."""
        if networks is None or self._touched is None:
            self._touched = None
        else:
            self._touched |= networks
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                LOG.exception("identity map pass failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.scan_interval):
                    await self._wake.wait()

    async def run_pass(self) -> None:
        """One pass: discover proxies, then bring each one that needs it up to date."""
        touched, self._touched = self._touched, set()
        now = time.monotonic()
        targets = self._discover()
        for owner in set(self._kept) - set(targets):
            del self._kept[owner]
        for owner, target in targets.items():
            kept = self._kept.get(owner)
            if kept is None or kept.target != target:
                kept = self._kept[owner] = _Kept(target)
            networks = frozenset(scope_networks(self.index, target.kind, target.scope_id))
            due = (kept.pushed is None or kept.failing or touched is None
                   or bool(touched & (networks | kept.networks))
                   or _file_id(target.map_file) != kept.file_id
                   or now - kept.verified_at >= self.verify_interval)
            if not due:
                continue
            kept.networks = networks
            await self._sync(kept, now, verify=now - kept.verified_at >= self.verify_interval)
        self.passes += 1

    def _discover(self) -> dict[str, MapTarget]:
        folder = os.path.dirname(config_path(self.state_path, "x"))
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return {}
        out = {}
        seen: dict[str, tuple[int, int, MapTarget | None]] = {}
        for name in names:
            if not name.endswith(".conf") or name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            # Configs are replaced by rename: an unchanged (inode, mtime) is an unchanged text,
            # so a scan reads only new or rewritten configs.
            cached = self._scanned.get(name)
            if cached is not None and cached[:2] == (st.st_ino, st.st_mtime_ns):
                target = cached[2]
            else:
                text = read_text(path)
                target = map_target(text) if text else None
            seen[name] = (st.st_ino, st.st_mtime_ns, target)
            if target is not None:
                out[target.owner_id] = target
        self._scanned = seen
        return out

    async def _sync(self, kept: _Kept, now: float, *, verify: bool) -> None:
        t = kept.target
        desired = desired_map(self.index, t.kind, t.scope_id, self.secret)
        text = map_file_text(desired)
        on_disk = read_text(t.map_file)
        # What the running map holds is known without asking when the last update succeeded
        # and the file still holds it (a haproxy restarted since loaded that same file; a
        # proxy re-created from scratch has a new, empty file): the change alone is sent, not
        # a `show map` of the whole map. Otherwise, and every verify_interval, haproxy is asked.
        trusted = (kept.pushed is not None and not kept.failing and not verify
                   and on_disk == map_file_text(kept.pushed))
        # The file first: a haproxy (re)started from now on loads what the running one gets.
        if on_disk != text:
            write_atomic(t.map_file, text, 0o600)
        kept.file_id = _file_id(t.map_file)
        api = RuntimeApi(t.admin_socket)
        try:
            actual = list(kept.pushed.items()) if trusted and kept.pushed is not None \
                else await api.show_map(t.map_file)
            edits = diff_map(actual, desired)
            if edits:
                await api.edit_map(t.map_file, edits)
                LOG.info("identity map of %s %s: %d edits (%d entries)", t.kind, t.scope_id,
                         len(edits), len(desired))
        except RuntimeApiUnavailable as exc:
            # The proxy is starting or being replaced: it loads the file just written.
            if not kept.failing:
                LOG.info("identity map of %s %s written; runtime update deferred (%s)",
                         t.kind, t.scope_id, exc)
            kept.failing = True
            return
        except RuntimeApiError as exc:
            if not kept.failing:
                LOG.warning("identity map of %s %s: haproxy refused an update (%s); retrying",
                            t.kind, t.scope_id, exc)
            kept.failing = True
            return
        if kept.failing:
            LOG.info("identity map of %s %s is current again", t.kind, t.scope_id)
        kept.failing = False
        kept.pushed = desired
        if not trusted:
            kept.verified_at = now


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
