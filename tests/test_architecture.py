"""Imports run one way: pure helpers -> map -> model/viewer -> localize -> server -> scripts -> benchmarks.

Read from the source with ``ast`` (function-local imports count), so that the layering stays true. Tests and
benchmarks use crossfire_ns only through its public names (one test per file, named by its path).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

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


# ------------------------------------------------------------------------------ tests and benchmarks use public names

CHECKED_FOR_PRIVATES = ("benchmarks", "tests")
"""Folders whose files may use only crossfire_ns's public names: what they need of it, its users need too."""

THIRD_PARTY_PRIVATES = frozenset(
    {
        "_start_step",  # nerfstudio's Trainer
        "_dataparser_outputs",  # nerfstudio's InputDataset
    }
)
"""Private attributes of other projects that tests may read (crossfire_ns's own privates are never allowed)."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def _defined_names(tree: ast.AST) -> Set[str]:
    """Names a file defines itself (def, class, assignment targets, ``self._x = ...``): its own privates. Assigning
    another object's private (``obj._x = ...``, a monkeypatch) defines nothing: that is a use."""
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for part in ast.walk(target):
                    if isinstance(part, ast.Name):
                        found.add(part.id)
                    elif isinstance(part, ast.Attribute) and _on_self(part):
                        found.add(part.attr)
    return found


def private_uses(source: str) -> List[Tuple[int, str]]:
    """(line, name) of each use in ``source`` of a private name of crossfire_ns: ``from crossfire_ns.x import _y``
    (or a ``_module`` on the way), and ``X._name`` with X not ``self``/``cls`` and ``_name`` neither defined in the
    same source nor in ``THIRD_PARTY_PRIVATES``."""
    tree = ast.parse(source)
    own = _defined_names(tree) | THIRD_PARTY_PRIVATES
    found: List[Tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "crossfire_ns":
            parts = node.module.split(".")
            found += [(node.lineno, f"{node.module} (module)") for part in parts if _is_private(part)][:1]
            found += [(alias.lineno, alias.name) for alias in node.names if _is_private(alias.name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "crossfire_ns" and any(_is_private(part) for part in parts):
                    found.append((node.lineno, f"{alias.name} (module)"))
        elif isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own and not _on_self(node):
            found.append((node.lineno, node.attr))
    return sorted(set(found))


def _files_checked_for_privates() -> List[Path]:
    return [p for folder in CHECKED_FOR_PRIVATES for p in sorted((ROOT / folder).rglob("*.py"))]


@pytest.mark.parametrize("path", _files_checked_for_privates(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_tests_and_benchmarks_use_only_public_names(path: Path):
    """Each file is its own test (its path is the test id), so a failure names the files that still reach in."""
    relative = path.relative_to(ROOT).as_posix()
    wrong = [f"{relative}:{line}: {name}" for line, name in private_uses(path.read_text(encoding="utf-8"))]
    assert not wrong, "private names of crossfire_ns (make them public, or test through a public one):\n" + "\n".join(
        wrong
    )


def test_the_checker_catches_private_imports_and_attributes():
    source = """
from crossfire_ns.model import CrossfireModel, _hidden
from crossfire_ns._internal import thing
import crossfire_ns.localize._secret
from numpy import _private_numpy_is_not_ours
model._encode(x)
self._fine, cls._fine_too, obj.__dict__, trainer._start_step
class Fake:
    def __init__(self):
        self._kept = 1
    def _own(self):
        return other._own(), other._kept
helper._patched = 1
"""
    assert private_uses(source) == [
        (2, "_hidden"),
        (3, "crossfire_ns._internal (module)"),
        (4, "crossfire_ns.localize._secret (module)"),
        (6, "_encode"),
        (13, "_patched"),
    ]


def _main_guard_not_last(source: str) -> bool:
    """Whether a module's ``if __name__ == "__main__":`` block has top-level code after it (code that a module run as
    a script, ``python -m``, has not yet defined when the block runs)."""
    body = ast.parse(source).body
    for position, node in enumerate(body):
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__":
            return position != len(body) - 1
    return False


@pytest.mark.parametrize(
    "path",
    [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_a_script_guard_is_the_last_statement(path: Path):
    assert not _main_guard_not_last(path.read_text()), f"{path}: code after `if __name__ == '__main__':`"


def test_the_script_guard_check_catches_code_after_it():
    assert _main_guard_not_last('def f(): pass\nif __name__ == "__main__":\n    f()\ndef g(): pass\n')
    assert not _main_guard_not_last('def f(): pass\nif __name__ == "__main__":\n    f()\n')
