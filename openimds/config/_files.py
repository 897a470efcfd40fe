"""Reading ini files the way oslo.config does, plus the one leniency openimds adds.

The seed's nova.conf snippet has `key = value` lines with no section header. oslo.config
rejects that ("Section must be started before assignment"), so lines before the first
header are taken as `[DEFAULT]`: that is where every such seed option lives, and it is what
an operator who pasted the snippet meant. Such a file is handed to oslo.config as a
normalised copy (the same text behind a `[DEFAULT]` line) that lives as long as the
ConfigOpts does.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from oslo_config import cfg, iniparser


@dataclass
class RawFile:
    """One parsed ini file: every value as written, per section, with line numbers."""

    path: str
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)
    implicit_default: bool = False


class FileParseError(Exception):
    """A file could not be read or is not ini syntax."""

    def __init__(self, path: str, lineno: int | None, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.lineno = lineno
        self.message = message


class _LenientParser(cfg.ConfigParser):
    """oslo's own parser (same comments, continuations, quoting), with section-less lines
    going to DEFAULT."""

    def __init__(self, raw: RawFile) -> None:
        super().__init__(raw.path, raw.sections)
        self._raw = raw

    def assignment(self, key: str, value: list[str]) -> None:
        if not self.section:
            self._raw.implicit_default = True
            self.new_section("DEFAULT")
        assert self.section is not None
        self._raw.lines[(self.section, key)] = self.lineno
        super().assignment(key, value)


def read_file(path: str) -> RawFile:
    raw = RawFile(path=path)
    parser = _LenientParser(raw)
    try:
        parser.parse()
    except iniparser.ParseError as exc:
        raise FileParseError(path, exc.lineno, f"line {exc.lineno}: {exc.msg}: {exc.line!r}") \
            from exc
    except OSError as exc:
        raise FileParseError(path, None, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise FileParseError(path, None, f"not text: {exc}") from exc
    return raw


def expand(config_files: list[str] | tuple[str, ...],
           config_dirs: list[str] | tuple[str, ...]) -> list[str]:
    """The files in the order oslo.config reads them: the files, then each dir's *.conf
    sorted. Missing files and dirs are errors here (oslo would skip default ones)."""
    out: list[str] = []
    for path in config_files:
        if not os.path.isfile(path):
            raise FileParseError(path, None, "no such file")
        out.append(path)
    for d in config_dirs:
        if not os.path.isdir(d):
            raise FileParseError(d, None, "no such directory")
        out.extend(sorted(glob.glob(os.path.join(d, "*.conf"))))
    return out


def normalised_text(path: str) -> str:
    with open(path) as f:
        return "[DEFAULT]\n" + f.read()


def group_key(section: str) -> str:
    """oslo.config's section matching: DEFAULT exactly, other names case-insensitively."""
    return section if section == "DEFAULT" else section.lower()
