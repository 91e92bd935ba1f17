"""Layering of the bottom modules and the catalogs: what each may import at module level (DESIGN.md §6)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pollerd"

# module -> the pollerd modules it may import at module level (TYPE_CHECKING blocks excluded).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "units": set(),
    "text": set(),
    "backoff": set(),
    "config/model": set(),
    "config/locate": set(),
    "config/fields": {"pollerd.config.locate", "pollerd.errors", "pollerd.units"},
    "config/source": {"pollerd.errors"},
    # The catalogs name drivers, parsers, simulators and clients by reference, imported on use.
    "catalog": set(),
    "push/registry": set(),
    "push/plugins": {"pollerd.push.registry"},
}


def _module_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = "pollerd." + ".".join(path.relative_to(PKG).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in tree.body:   # module level only; function bodies import on use
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rstrip(".").split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
    return {m for m in found if m == "pollerd" or m.startswith("pollerd.")}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_only_what_its_layer_allows(module: str) -> None:
    imported = _module_imports(PKG / f"{module}.py")
    assert imported <= ALLOWED[module], f"{module} imports {sorted(imported - ALLOWED[module])}"


def test_the_check_itself_sees_imports() -> None:
    # A checker that found nothing would pass everything: load.py imports the catalogs, for one.
    assert {"pollerd.catalog", "pollerd.push.registry", "pollerd.config.model"} <= _module_imports(
        PKG / "config" / "load.py")
    assert "pollerd.errors" in _module_imports(PKG / "drivers" / "mercury230.py")
