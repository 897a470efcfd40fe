"""Loading a service's configuration: oslo.config plus eager validation and file findings.

oslo.config validates a value only when it is read and ignores unknown keys silently. A
service should fail at start, not at its first request, and an operator should hear about
a misspelt option, so `inspect_config` reads every file itself first (with oslo's parser),
checks each value against its option's type, and records where every option was set.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from oslo_config import cfg

from openimds.config import _files
from openimds.config.services import SERVICES, registrations

LOG = logging.getLogger("openimds.config")

# oslo.config's own always-present options; never "unknown".
_OSLO_BUILTIN = {("DEFAULT", "config_file"), ("DEFAULT", "config_dir"),
                 ("DEFAULT", "config_source")}


class ConfigError(Exception):
    """A configuration that cannot be used. `str()` is one line:
    `<file>: [section] option: <reason>` (or `<file>: <reason>` for a file-level problem)."""

    def __init__(self, file: str, section: str | None, option: str | None,
                 message: str) -> None:
        self.file = file
        self.section = section
        self.option = option
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.section is None or self.option is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}: [{self.section}] {self.option}: {self.message}"


FindingKind = Literal["deprecated", "unknown", "unknown-section", "unused", "no-section"]


@dataclass(frozen=True)
class Finding:
    """Something worth a warning that does not stop the service."""

    kind: FindingKind
    file: str
    section: str
    option: str
    message: str

    def __str__(self) -> str:
        where = f"[{self.section}] {self.option}: " if self.option else f"[{self.section}]: "
        return f"{self.file}: {where}{self.message}"


@dataclass(frozen=True)
class Origin:
    """Where an option's effective value was written: file, section and spelling."""

    file: str
    section: str
    key: str
    deprecated: bool


@dataclass(frozen=True)
class OptRef:
    section: str  # the current section ("DEFAULT" for the top)
    opt: cfg.Opt


@dataclass
class LoadedConfig:
    service: str
    conf: cfg.ConfigOpts
    files: list[str]
    findings: list[Finding] = field(default_factory=list)
    # (current section, dest) -> where the effective value came from
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict)

    def options(self) -> list[OptRef]:
        return [OptRef(section, opt) for section, opts in registrations(self.service)
                for opt in opts]


def _index(service: str) -> dict[tuple[str, str], tuple[OptRef, bool]]:
    """(section key, option key) as it may appear in a file -> (option, is a deprecated name).
    Mirrors how oslo.config expands DeprecatedOpt (name and/or group default to the current)."""
    idx: dict[tuple[str, str], tuple[OptRef, bool]] = {}
    for section, opts in registrations(service):
        for opt in opts:
            ref = OptRef(section, opt)
            idx[(_files.group_key(section), opt.dest)] = (ref, False)
            for dep in opt.deprecated_opts:
                if dep.name or dep.group:
                    key = (_files.group_key(dep.group or section), dep.name or opt.dest)
                    idx.setdefault(key, (ref, True))
    return idx


def _who_uses(section: str, key: str) -> list[str]:
    return [s for s in SERVICES if s != "all-in-one" and (section, key) in _index(s)]


def _check_value(ref: OptRef, raw: _files.RawFile, section: str, key: str,
                 value: str) -> None:
    if "$" in value:
        return  # interpolated; checked after oslo substitutes it
    try:
        ref.opt.type(value)
    except (ValueError, TypeError) as exc:
        shown = "(secret value)" if ref.opt.secret else repr(value)
        line = raw.lines.get((section, key))
        at = f" (line {line})" if line else ""
        raise ConfigError(raw.path, section, key,
                          f"invalid value {shown}{at}: {exc}") from exc


def _analyse(service: str, raws: list[_files.RawFile]) -> tuple[list[Finding],
                                                                dict[tuple[str, str], Origin]]:
    idx = _index(service)
    every = _index("all-in-one")
    known_sections = {k[0] for k in every}
    findings: list[Finding] = []
    origins: dict[tuple[str, str], Origin] = {}
    for raw in raws:
        if raw.implicit_default:
            findings.append(Finding(
                "no-section", raw.path, "DEFAULT", "",
                "lines before the first section header are read as [DEFAULT]"))
        for section, values in raw.sections.items():
            gkey = _files.group_key(section)
            if gkey not in known_sections and values:
                findings.append(Finding(
                    "unknown-section", raw.path, section, "",
                    f"unknown section, its {len(values)} option(s) are ignored"))
                continue
            # Within one file oslo prefers the current spelling over a deprecated one.
            for key in sorted(values, key=lambda k: idx.get((gkey, k), (None, True))[1]):
                if (gkey, key) in _OSLO_BUILTIN:
                    continue
                hit = idx.get((gkey, key))
                if hit is None:
                    users = _who_uses(gkey, key)
                    if users:
                        findings.append(Finding(
                            "unused", raw.path, section, key,
                            f"not read by {service} (an option of {', '.join(users)})"))
                    else:
                        findings.append(Finding("unknown", raw.path, section, key,
                                                "unknown option, ignored"))
                    continue
                ref, deprecated = hit
                for value in values[key]:
                    _check_value(ref, raw, section, key, value)
                if deprecated:
                    findings.append(Finding(
                        "deprecated", raw.path, section, key,
                        f"deprecated name; use [{ref.section}] {ref.opt.dest}"))
                okey = (ref.section, ref.opt.dest)
                prev = origins.get(okey)
                if prev is None or prev.file != raw.path or not deprecated:
                    origins[okey] = Origin(raw.path, section, key, deprecated)
    return findings, origins


class _DropOsloDeprecationLog(logging.Filter):
    """oslo.config logs a deprecated name without saying which file used it; openimds
    reports the same thing with file and section (Finding), so oslo's line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is deprecated. Use option" not in str(record.msg)


_oslo_log = logging.getLogger("oslo_config.cfg")
if not any(isinstance(f, _DropOsloDeprecationLog) for f in _oslo_log.filters):
    _oslo_log.addFilter(_DropOsloDeprecationLog())


def _section_attr(conf: cfg.ConfigOpts, section: str) -> object:
    return conf if section == "DEFAULT" else getattr(conf, section)


def inspect_config(service: str, config_files: Sequence[str],
                   config_dirs: Sequence[str] = ()) -> LoadedConfig:
    """Load `service`'s options from the files and dirs, validate every value, and return
    the ConfigOpts with findings (deprecated, unknown) and the origin of each set option.

    Raises ConfigError for an unreadable file, bad ini syntax or an invalid value.
    """
    regs = registrations(service)  # ValueError for an unknown service, before any I/O
    try:
        paths = _files.expand(tuple(config_files), tuple(config_dirs))
        raws = [_files.read_file(p) for p in paths]
    except _files.FileParseError as exc:
        raise ConfigError(exc.path, None, None, exc.message) from exc
    findings, origins = _analyse(service, raws)

    conf = cfg.ConfigOpts()
    for section, opts in regs:
        conf.register_opts(list(opts), group=None if section == "DEFAULT" else section)

    oslo_paths = [r.path for r in raws]
    if any(r.implicit_default for r in raws):
        tmp = tempfile.mkdtemp(prefix="openimds-config-")
        # The copies must outlive this call: oslo re-reads them on reload_config_files().
        weakref.finalize(conf, shutil.rmtree, tmp, True)
        for i, raw in enumerate(raws):
            if raw.implicit_default:
                copy = os.path.join(tmp, f"{i}-{os.path.basename(raw.path)}")
                with open(copy, "w") as f:
                    f.write(_files.normalised_text(raw.path))
                oslo_paths[i] = copy
    try:
        conf(args=[], project="openimds", default_config_files=oslo_paths,
             default_config_dirs=[], validate_default_values=True, use_env=False)
    except cfg.Error as exc:  # syntax was checked above, so this is rare
        raise ConfigError(", ".join(paths) or "<no files>", None, None, str(exc)) from exc

    # Force every value through its type now (substituted $vars included).
    for section, opts in regs:
        holder = _section_attr(conf, section)
        for opt in opts:
            try:
                getattr(holder, opt.dest)
            except (cfg.Error, ValueError) as exc:
                origin = origins.get((section, opt.dest))
                raise ConfigError(
                    origin.file if origin else "<defaults>",
                    origin.section if origin else section,
                    origin.key if origin else opt.dest,
                    f"invalid value: {exc}",
                ) from exc
    return LoadedConfig(service, conf, paths, findings, origins)


def load_config(service: str, config_files: Sequence[str],
                config_dirs: Sequence[str] = ()) -> cfg.ConfigOpts:
    """A fresh ConfigOpts for `service` (one of SERVICES), every value validated.

    Deprecated spellings and unknown options are logged as warnings on `openimds.config`,
    naming file, section and option. Raises ConfigError on an invalid value.
    """
    loaded = inspect_config(service, config_files, config_dirs)
    for finding in loaded.findings:
        # One file commonly serves several services (all-in-one, a shared neutron.conf):
        # another service's option is expected there, so it is noted only at debug level.
        # `openimds config check` still reports every finding.
        level = logging.DEBUG if finding.kind == "unused" else logging.WARNING
        LOG.log(level, "%s", finding)
    return loaded.conf


def database_url(conf: cfg.ConfigOpts) -> str:
    """`[database] connection`, or the SQLite file under state_path when it is empty."""
    url = str(conf.database.connection or "")
    return url or "sqlite:///" + os.path.join(conf.state_path, "openimds.sqlite")
