"""What `openimds config check` reports, as plain values (the CLI only prints them).

* `plan_checks`: which service reads which files (guessed from the file names).
* `effective_options`: every option's value per section, secrets masked.
* `secret_mismatches`: the metadata API's and the agent's HMAC keys differ; with such files
  every request would fail 403, which the seed's own files do (SECRET_KEY vs SECRETE_KEY).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from oslo_config import cfg

from openimds.config._load import LoadedConfig, Origin

MASK = "****"

# File name -> the service that reads it (`dhcp_agent.in` is how seed 000 spells it once).
_BY_FILE_NAME = {
    "nova.conf": "metadata-api",
    "metadata_agent.ini": "metadata-agent",
    "dhcp_agent.ini": "dhcp-agent",
    "dhcp_agent.in": "dhcp-agent",
    "l3_agent.ini": "l3-agent",
    "linuxbridge_agent.ini": "l2-agent",
    "ml2_conf.ini": "control-api",
}


def guess_service(path: str) -> str | None:
    return _BY_FILE_NAME.get(os.path.basename(path))


def plan_checks(config_files: Sequence[str], service: str | None = None
                ) -> list[tuple[str, list[str]]]:
    """(service, files) pairs to load. With `service`, all files go to it. Otherwise each
    recognised file goes to its service and the other files (neutron.conf, a shared
    openimds.conf) are read by every one of them, in the order given, as neutron's agents
    read neutron.conf plus their own ini. With no recognised file: all-in-one."""
    if service is not None:
        return [(service, list(config_files))]
    services: list[str] = []
    for path in config_files:
        s = guess_service(path)
        if s is not None and s not in services:
            services.append(s)
    if not services:
        return [("all-in-one", list(config_files))]
    return [(s, [p for p in config_files if guess_service(p) in (None, s)]) for s in services]


@dataclass(frozen=True)
class ShownOption:
    name: str
    value: str  # already masked when secret
    origin: Origin | None


def _render(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def _value(conf: cfg.ConfigOpts, section: str, dest: str) -> object:
    holder = conf if section == "DEFAULT" else getattr(conf, section)
    return getattr(holder, dest)


def effective_options(loaded: LoadedConfig) -> list[tuple[str, list[ShownOption]]]:
    """Sections (DEFAULT first, then by name) with their options sorted by name. A secret
    shows as MASK when set and as empty when not (whether it is set is not a secret)."""
    by_section: dict[str, dict[str, ShownOption]] = {}
    for ref in loaded.options():
        value = _value(loaded.conf, ref.section, ref.opt.dest)
        shown = (MASK if value else "") if ref.opt.secret else _render(value)
        origin = loaded.origins.get((ref.section, ref.opt.dest))
        by_section.setdefault(ref.section, {})[ref.opt.dest] = ShownOption(
            ref.opt.dest, shown, origin)
    order = sorted(by_section, key=lambda s: (s != "DEFAULT", s.lower()))
    return [(s, sorted(by_section[s].values(), key=lambda o: o.name)) for s in order]


@dataclass(frozen=True)
class SecretSide:
    service: str
    where: str  # "nova.conf [DEFAULT] neutron_metadata_proxy_shared_secret" or "not set ..."
    value: str


@dataclass(frozen=True)
class SecretMismatch:
    api: SecretSide
    agent: SecretSide

    def message(self) -> str:
        return (
            f"the metadata shared secrets differ: {self.api.where} (metadata API) is not "
            f"the same as {self.agent.where} (metadata agent). The metadata API would "
            "reject every request the agent signs (403 Forbidden); set both to the same "
            "value."
        )


def _side(loaded: LoadedConfig, section: str, current: str) -> SecretSide | None:
    if not any(r.section == section and r.opt.dest == "metadata_proxy_shared_secret"
               for r in loaded.options()):
        return None
    value = str(_value(loaded.conf, section, "metadata_proxy_shared_secret") or "")
    origin = loaded.origins.get((section, "metadata_proxy_shared_secret"))
    if origin is None:
        files = ", ".join(loaded.files) or "no file"
        where = f"{current} (not set in {files}, so empty)"
    else:
        where = f"{origin.file} [{origin.section}] {origin.key}"
        if origin.deprecated:
            where += f" (read as {current})"
    return SecretSide(loaded.service, where, value)


def secret_mismatches(loads: Sequence[LoadedConfig]) -> list[SecretMismatch]:
    """Every (API side, agent side) pair among the loads whose keys differ."""
    apis = [s for s in (_side(x, "neutron", "[neutron] metadata_proxy_shared_secret")
                        for x in loads) if s]
    agents = [s for s in (_side(x, "DEFAULT", "[DEFAULT] metadata_proxy_shared_secret")
                          for x in loads) if s]
    out: list[SecretMismatch] = []
    seen: set[tuple[str, str]] = set()
    for api in apis:
        for agent in agents:
            if api.value != agent.value and (api.where, agent.where) not in seen:
                seen.add((api.where, agent.where))
                out.append(SecretMismatch(api, agent))
    return out
