"""A thin client of haproxy's runtime API (the admin `stats socket`), for map mode.

    RuntimeApi(socket_path).show_map(map_file) -> [(key, value)]
    RuntimeApi(socket_path).edit_map(map_file, [MapEdit]) -> None

One command line per connection (the socket's non-interactive mode: haproxy answers and closes),
several commands joined by ';' in one line. haproxy answers a successful `add/set/del map`
with nothing, so any text back is its error, raised as RuntimeApiError with that text.
Connection failures (no socket, haproxy gone) are RuntimeApiUnavailable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["MapEdit", "RuntimeApi", "RuntimeApiError", "RuntimeApiUnavailable", "parse_show_map"]

# haproxy reads a command line into one buffer (bufsize, 16 KiB by default): stay well below.
_MAX_LINE = 8000


class RuntimeApiError(RuntimeError):
    """haproxy refused a command; the message is its answer."""


class RuntimeApiUnavailable(RuntimeApiError):
    """The admin socket cannot be reached (no such socket, haproxy not running)."""


class MapEdit(NamedTuple):
    verb: str  # "add" | "set" | "del"
    key: str
    value: str = ""


def parse_show_map(text: str) -> list[tuple[str, str]]:
    """`show map <file>` lines ("0x55d0c8a4f0 <key> <value>") as (key, value), in order."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0].startswith("0x"):
            out.append((parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def _command(edit: MapEdit, map_file: str) -> str:
    if edit.verb == "del":
        return f"del map {map_file} {edit.key}"
    if edit.verb in ("add", "set"):
        return f"{edit.verb} map {map_file} {edit.key} {edit.value}"
    raise ValueError(f"unknown map edit {edit.verb!r}")


class RuntimeApi:
    def __init__(self, socket_path: str, *, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def command(self, line: str) -> str:
        """Send one command line, return haproxy's whole answer."""
        if "\n" in line:
            raise ValueError("one command line only")
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    data = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise RuntimeApiUnavailable(
                f"haproxy admin socket {self.socket_path}: {exc or type(exc).__name__}") from exc
        return data.decode("utf-8", "replace")

    async def show_map(self, map_file: str) -> list[tuple[str, str]]:
        answer = await self.command(f"show map {map_file}")
        entries = parse_show_map(answer)
        if not entries and answer.strip():
            raise RuntimeApiError(answer.strip())  # e.g. "Unknown map identifier."
        return entries

    async def edit_map(self, map_file: str, edits: Sequence[MapEdit]) -> None:
        """Apply `edits` in order, as few command lines as fit."""
        batch: list[str] = []
        size = 0
        for edit in edits:
            cmd = _command(edit, map_file)
            if batch and size + len(cmd) + 1 > _MAX_LINE:
                await self._run_batch(batch)
                batch, size = [], 0
            batch.append(cmd)
            size += len(cmd) + 1
        if batch:
            await self._run_batch(batch)

    async def _run_batch(self, commands: list[str]) -> None:
        answer = (await self.command(";".join(commands))).strip()
        if answer:
            raise RuntimeApiError(f"{answer} (in {len(commands)} map edits)")
