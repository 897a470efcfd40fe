"""Every package and module of openimds that declares `__all__` keeps it true.

Three rules, each of which fails on a real mistake:

* every regular package of openimds declares `__all__` in its `__init__.py` (a directory
  without `__init__.py` would be an implicit namespace package: no surface at all);
* every name in an `__all__` exists: importing it from the module gives a value (names a
  package loads on first use, PEP 562, and submodules count), and no name is listed twice;
* every name another openimds module imports from a module with `__all__` is listed there:
  a name used across modules is part of the surface, whatever its module says.

The imports are read from the source with `ast` (module level and inside functions alike),
so a lazy `from openimds.x import y` inside a function is checked too.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "openimds"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if "migrations" not in p.parts}


def _declared_all(path: Path) -> list[str] | None:
    """The literal `__all__` of a module (None when it has none)."""
    for node in ast.parse(path.read_text()).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = ast.literal_eval(node.value)  # type: ignore[arg-type]
            assert isinstance(value, list | tuple), f"{path}: __all__ is not a literal list"
            return [str(name) for name in value]
    return None


@dataclass(frozen=True)
class Import:
    importer: str
    module: str
    name: str
    line: int


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(sources: dict[str, Path]) -> list[Import]:
    found = []
    for name, path in sources.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = _absolute(name, is_package, node)
                if module.startswith("openimds"):
                    found += [Import(name, module, alias.name, node.lineno)
                              for alias in node.names]
    return found


def _package(module: str) -> str:
    """The part of openimds a module belongs to (`openimds.metadata` for its modules)."""
    return ".".join(module.split(".")[:2])


SOURCES = _sources()
WITH_ALL = {name: names for name, path in SOURCES.items()
            if (names := _declared_all(path)) is not None}


def test_the_surface_rules_see_the_tree() -> None:
    # The rules below check nothing if the tree is not found or parsed: pin that they do.
    assert "openimds.agent" in WITH_ALL
    assert len(WITH_ALL) > 50
    assert len(_imports(SOURCES)) > 200


@pytest.mark.parametrize("package", sorted({
    str(p.parent.relative_to(PACKAGE.parent)).replace("/", ".")
    for p in PACKAGE.rglob("*.py")
    if "migrations" not in p.parts
}))
def test_every_package_declares_all(package: str) -> None:
    if package == "openimds":
        return  # the top package holds only __version__ and the entry point
    init = PACKAGE.parent / package.replace(".", "/") / "__init__.py"
    assert init.exists(), f"{package} has no __init__.py (an implicit namespace package)"
    assert _declared_all(init) is not None, f"{package}/__init__.py has no __all__"


@pytest.mark.parametrize("module", sorted(WITH_ALL))
def test_every_listed_name_exists(module: str) -> None:
    names = WITH_ALL[module]
    assert len(names) == len(set(names)), f"{module}.__all__ lists a name twice"
    loaded = importlib.import_module(module)
    for name in names:
        if not hasattr(loaded, name):
            # A package may list a submodule it does not import eagerly.
            assert SOURCES[module].name == "__init__.py", f"{module}.__all__: no {name}"
            importlib.import_module(f"{module}.{name}")


def test_every_name_imported_across_modules_is_listed() -> None:
    missing = []
    for imp in _imports(SOURCES):
        listed = WITH_ALL.get(imp.module)
        if listed is None or imp.importer == imp.module or imp.name in listed:
            continue
        if f"{imp.module}.{imp.name}" in SOURCES:
            continue  # `from package import submodule`
        if imp.name.startswith("_") and _package(imp.importer) == _package(imp.module):
            continue  # a private helper shared inside one package, never across packages
        missing.append(f"{imp.importer}:{imp.line} imports {imp.name} from {imp.module}")
    assert not missing, "names used across modules but missing from __all__:\n" + "\n".join(
        missing)

