"""Imports run one way: pure helpers -> map -> model/viewer -> localize -> server -> scripts -> benchmarks.

Read from the source with ``ast`` (function-local imports count), so that the layering stays true.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("crossfire_ns", "method_configs", "benchmarks")

LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    (
        "pure helpers",
        (
            "crossfire_ns",
            "crossfire_ns.errors",
            "crossfire_ns.geometry",
            "crossfire_ns.io",
            "crossfire_ns.results",
            "crossfire_ns.metrics",
            "crossfire_ns.compat",
            "crossfire_ns.synthetic",
        ),
    ),
    ("map", ("crossfire_ns.map",)),
    (
        "model/viewer",
        (
            "crossfire_ns.model",
            "crossfire_ns.encoder",
            "crossfire_ns.losses",
            "crossfire_ns.descriptor_field",
            "crossfire_ns.datamanager",
            "crossfire_ns.warp_supervision",
            "crossfire_ns.surface_cache",
            "crossfire_ns.viewer",
            "method_configs",
        ),
    ),
    ("localize", ("crossfire_ns.localize",)),
    ("server", ("crossfire_ns.server",)),
    ("scripts", ("crossfire_ns.scripts",)),
    ("benchmarks", ("benchmarks",)),
)
"""Each module's layer is that of its longest listed prefix; a module may import only from its layer or below."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> Dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, modules: Dict[str, Path]) -> Set[str]:
    """Our modules that ``path`` imports anywhere in it (top level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(module: str) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return rank


def import_graph() -> Dict[str, Set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "crossfire_ns.map" in graph["crossfire_ns.scripts.localize"]
    assert "crossfire_ns.viewer.tools" in graph["crossfire_ns.model"]  # a function-local import counts


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_run_down_the_layers():
    wrong = [
        f"{source} ({LAYERS[layer_of(source)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for source, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]
    assert wrong == []


def test_only_scripts_import_scripts():
    wrong = [
        f"{source} imports {target}"
        for source, targets in import_graph().items()
        for target in targets
        if target.startswith("crossfire_ns.scripts") and not source.startswith("crossfire_ns.scripts")
    ]
    assert wrong == []


def test_the_checker_catches_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("crossfire_ns.localize.run") > layer_of("crossfire_ns.map") > layer_of("crossfire_ns.io.queries")
