"""The three-ring rule as a test: pure and sans-IO modules import no I/O.

Ring 1 (pure values and functions) and ring 2 (sans-IO state machines) may
not import the event loop, sockets, the clock, the file system, logging,
threads, processes, YAML or a source of randomness (the driver injects one,
as it injects the time). Neither may import a ring-3 driver module, and
ring 1 may not import ring 2. Only the drivers touch the outside world.

Every module of the package is placed in a ring, here: a module this file
cannot place fails `test_every_module_is_placed`, so a new module states
its ring when it is added instead of escaping the check unnoticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sipguard"

FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "os",
        "logging",
        "yaml",
        "threading",
        "subprocess",
        "selectors",
        "random",
        "secrets",
    }
)
# Ring 1: every module of these packages (but the ring-3 ones named below),
# and these modules.
RING_1_PACKAGES = frozenset({"sipguard.sip", "sipguard.policy", "sipguard.rules"})
RING_1 = frozenset(
    {
        "sipguard",
        "sipguard.errors",
        "sipguard.peer",
        "sipguard.ratetable",
        "sipguard.sharedtable",
        "sipguard.sourcelimit",
        "sipguard.answercache",
        "sipguard.strangers",
    }
)
RING_2 = frozenset(
    {
        "sipguard.events",
        "sipguard.transaction",
        "sipguard.dialog",
        "sipguard.protection",
        "sipguard.txtable",
        "sipguard.b2bua",
    }
)
RING_3 = frozenset(
    {
        "sipguard.server",
        "sipguard.cli",
        "sipguard.transport",
        "sipguard.audit",
        "sipguard.metrics",
        "sipguard.rules.loader",
        "sipguard.ratesync",
        "sipguard.trace",
        "sipguard.top",
        "sipguard.preflight",
        "sipguard.heap",
        "sipguard.__main__",
        # Adapters: the gate reads the wall clock and loads time zones;
        # explain reads a rule file and answers on the command line.
        "sipguard.gate",
        "sipguard.explain",
    }
)


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def ring_of(module: str) -> int | None:
    """The ring `module` is placed in, or None if this file does not place it."""
    if module in RING_3:
        return 3
    if module in RING_2:
        return 2
    in_package = any(
        module == package or module.startswith(package + ".") for package in RING_1_PACKAGES
    )
    return 1 if module in RING_1 or in_package else None


def ring_1_files() -> list[Path]:
    return [path for path in package_modules() if ring_of(module_name(path)) == 1]


def ring_2_files() -> list[Path]:
    return [path for path in package_modules() if ring_of(module_name(path)) == 2]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package relative imports in `path` start from."""
    module = module_name(path)
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def imported_modules(source: str, *, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, dynamic ones included."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            if node.args and isinstance(node.args[0], ast.Constant):
                yield node.lineno, str(node.args[0].value)


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def violations(path: Path, *, ring: int) -> list[str]:
    banned_internal = RING_3 | (RING_2 if ring == 1 else frozenset())
    found = []
    for line, name in imported_modules(path.read_text(encoding="utf-8"), package=package_of(path)):
        top = name.split(".")[0]
        if top in FORBIDDEN:
            found.append(f"{path.relative_to(ROOT)}:{line}: ring {ring} imports {name}")
        if any(name == banned or name.startswith(banned + ".") for banned in banned_internal):
            found.append(f"{path.relative_to(ROOT)}:{line}: ring {ring} imports driver {name}")
    return found


@pytest.mark.parametrize("path", ring_1_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_ring_1_module_is_pure(path: Path) -> None:
    assert violations(path, ring=1) == []


@pytest.mark.parametrize("path", ring_2_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_ring_2_module_is_sans_io(path: Path) -> None:
    assert violations(path, ring=2) == []


def test_every_module_is_placed() -> None:
    names = [module_name(path) for path in package_modules()]
    assert [name for name in names if ring_of(name) is None] == []


def test_every_placed_module_exists() -> None:
    names = {module_name(path) for path in package_modules()}
    assert sorted((RING_1 | RING_1_PACKAGES | RING_2 | RING_3) - names) == []


def test_relative_imports_resolve_from_the_package() -> None:
    assert package_of(PACKAGE / "policy" / "__init__.py") == "sipguard.policy"
    assert package_of(PACKAGE / "policy" / "trunks.py") == "sipguard.policy"


def test_the_rings_are_not_empty() -> None:
    names = {module_name(path) for path in ring_1_files()}
    assert {"sipguard.rules.schema", "sipguard.policy.trunks"} <= names
    assert "sipguard.rules.loader" not in names
    assert {"sipguard.errors", "sipguard.sip.parser"} <= names
    assert {module_name(path) for path in ring_2_files()} == RING_2


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os", ["os"]),
        ("import os.path as p", ["os.path"]),
        ("from time import monotonic", ["time", "time.monotonic"]),
        ("from . import loader", ["sipguard.rules", "sipguard.rules.loader"]),
        ("from ..server import Server", ["sipguard.server", "sipguard.server.Server"]),
        ("importlib.import_module('socket')", ["socket"]),
        ("__import__('asyncio')", ["asyncio"]),
    ],
)
def test_detector_sees_every_import_form(source: str, expected: list[str]) -> None:
    found = [name for _, name in imported_modules(source, package="sipguard.rules")]
    assert found == expected
