"""The package's layers, read from its imports (an AST walk, TYPE_CHECKING included).

A failure names the file, the line and the import that breaks the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import tokenbroker

PACKAGE = Path(tokenbroker.__file__).parent
MAX_LINES = 400

# part -> the parts it must never import (a part is the first name under tokenbroker)
FORBIDDEN: dict[str, frozenset[str]] = {
    "core": frozenset(
        {"backends", "plugins", "wix", "broker", "service", "cli", "testing", "settings"}
    ),
    "backends": frozenset({"plugins", "wix", "broker", "service", "cli", "testing", "settings"}),
    "plugins": frozenset({"wix", "broker", "service", "cli", "testing"}),
    "wix": frozenset({"broker", "service", "cli", "testing"}),
    "broker": frozenset({"service", "cli", "testing"}),
    "settings": frozenset({"broker", "service", "cli", "testing"}),
}

# part -> the only parts it may import: an allow-list, so a part added later is barred too
ALLOWED: dict[str, frozenset[str]] = {
    # providers: core, and plugins for hookimpl (and the type of the register callback)
    "providers": frozenset({"core", "plugins", "providers"}),
}
# The modules of plugins a provider may import: never the manager, which loads providers.
PROVIDER_PLUGIN_MODULES = frozenset(
    {"tokenbroker.plugins.hookspecs", "tokenbroker.plugins.registry"}
)


@attrs.frozen
class Import:
    source: str  # module that imports, dotted
    target: str  # module imported, dotted
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def known_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import of another tokenbroker module in ``path``, wherever it stands."""
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tokenbroker":
                    yield Import(source, alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "tokenbroker":
                continue
            # `from pkg import module` imports the module; `from m import name` imports m.
            submodules = [f"{target}.{a.name}" for a in node.names]
            named = [m for m in submodules if m in modules]
            yield from (Import(source, m, where) for m in named)
            if len(named) < len(submodules):
                yield Import(source, target, where)


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def all_imports() -> list[Import]:
    modules = known_modules()
    return [imp for path in sorted(modules.values()) for imp in imports_of(path, modules)]


class TestLayers:
    @pytest.mark.parametrize("part", sorted(FORBIDDEN))
    def test_a_part_imports_only_what_its_layer_allows(self, part: str) -> None:
        broken = [
            str(imp)
            for imp in all_imports()
            if part_of(imp.source) == part and part_of(imp.target) in FORBIDDEN[part]
        ]
        assert not broken, f"{part} must not import {sorted(FORBIDDEN[part])}:\n" + "\n".join(
            broken
        )

    @pytest.mark.parametrize("part", sorted(ALLOWED))
    def test_a_part_with_an_allow_list_imports_nothing_else(self, part: str) -> None:
        broken = [
            str(imp)
            for imp in all_imports()
            if part_of(imp.source) == part and part_of(imp.target) not in ALLOWED[part]
        ]
        assert not broken, f"{part} may import only {sorted(ALLOWED[part])}:\n" + "\n".join(broken)

    def test_providers_take_only_hookimpl_and_the_registry_types_from_plugins(self) -> None:
        broken = [
            str(imp)
            for imp in all_imports()
            if part_of(imp.source) == "providers"
            and part_of(imp.target) == "plugins"
            and imp.target not in PROVIDER_PLUGIN_MODULES
        ]
        assert not broken, "providers may import only hookspecs and registry of plugins:\n" + (
            "\n".join(broken)
        )

    def test_there_is_no_import_cycle(self) -> None:
        graph: dict[str, list[Import]] = {}
        for imp in all_imports():
            if imp.target != imp.source:
                graph.setdefault(imp.source, []).append(imp)
        cycle = find_cycle(graph)
        assert cycle is None, "import cycle:\n" + "\n".join(str(imp) for imp in cycle or [])


class TestModuleSize:
    def test_no_module_is_over_the_limit(self) -> None:
        big = {
            str(path.relative_to(PACKAGE.parent)): n
            for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        }
        assert not big, f"modules over {MAX_LINES} lines: {big}"


class TestTheCheckerItself:
    """The rules above only prove something if the walk finds what it should."""

    def test_it_sees_relative_type_checking_and_function_level_imports(self) -> None:
        found = {(imp.source, imp.target) for imp in all_imports()}
        # TYPE_CHECKING: the hookspecs type against core's protocols
        assert ("tokenbroker.plugins.hookspecs", "tokenbroker.core.protocols") in found
        # inside a function: the built-in backends load their modules lazily
        assert ("tokenbroker.plugins.builtin_backends", "tokenbroker.backends.memory") in found
        # the allow-list sees the providers' imports of plugins
        assert ("tokenbroker.providers.plugin", "tokenbroker.plugins.hookspecs") in found

    def test_it_finds_a_cycle(self) -> None:
        a_b = Import("a", "b", "a.py:1")
        b_a = Import("b", "a", "b.py:1")
        assert find_cycle({"a": [a_b], "b": [b_a]}) == [a_b, b_a]
        assert find_cycle({"a": [a_b]}) is None


def find_cycle(graph: dict[str, list[Import]]) -> list[Import] | None:
    """One cycle of the import graph as the imports that make it, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[Import] = []

    def visit(node: str) -> list[Import] | None:
        state[node] = 1
        for imp in graph.get(node, []):
            if state.get(imp.target) == 1:
                start = (
                    next(i for i, p in enumerate(path) if p.source == imp.target)
                    if any(p.source == imp.target for p in path)
                    else len(path)
                )
                return [*path[start:], imp]
            if imp.target not in state:
                path.append(imp)
                found = visit(imp.target)
                if found is not None:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found is not None:
                return found
    return None
