"""Code flows one way (docs/architecture.md#import-graph): every module under ``jaxseg/`` imports, no module
import cycle exists, and a room imports only rooms below it in ``LAYERS``.

A *room* is the first name below ``jaxseg`` (``jaxseg.attacks.pgd`` is in ``attacks``; ``jaxseg/__init__.py``
is the package root, which holds only the version). Imports are read from each module's source with ``ast``,
at top level and inside functions alike, so a lazy import counts as much as an eager one.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import jaxseg

ROOT = "jaxseg"

# Room → layer. A room may import rooms of lower layers only: never its own layer's other rooms, never above.
# Keep in step with the table in docs/architecture.md#import-graph.
LAYERS = {
    ROOT: 0, "validation": 0, "config": 0, "parallel": 0, "progress": 0, "errors": 0, "figures": 0,
    "metrics": 1, "arguments": 1,
    "data": 2, "models": 2,
    "checkpoint": 3,
    "convert": 4,
    "attacks": 5,
    "train": 6, "evaluate": 6, "pag": 6,
    "adversarial_examples": 7,
    "evaluation_run": 8,
    "quickstart_report": 9,
    "quickstart": 10,
    "cli": 11,
}


def module_names() -> list[str]:
    """Every module of the package, packages included (nothing skipped)."""
    names = [ROOT] + [info.name for info in pkgutil.walk_packages(jaxseg.__path__, prefix=f"{ROOT}.")]
    return sorted(names)


def source_path(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin)


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def imported_modules(name: str, modules: set[str]) -> set[str]:
    """The ``jaxseg`` modules that module ``name`` imports anywhere in its source (``from jaxseg.a import b``
    names the module ``jaxseg.a.b`` if that is one, else ``jaxseg.a``)."""
    path = source_path(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return found - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = set(module_names())
    return {name: imported_modules(name, modules) for name in sorted(modules)}


@pytest.mark.parametrize("name", module_names())
def test_every_module_imports(name):
    importlib.import_module(name)


def test_every_room_has_a_layer(graph):
    rooms = {room(name) for name in graph}
    assert not rooms - LAYERS.keys(), (
        f"rooms without a layer: {sorted(rooms - LAYERS.keys())}; add them to LAYERS here and to the table in "
        "docs/architecture.md#import-graph"
    )


def test_no_module_import_cycle(graph):
    cycles, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(name, path):
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target in graph and target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_rooms_import_only_lower_layers(graph):
    upward = [
        f"{name} ({room(name)}, layer {LAYERS[room(name)]}) imports {target} ({room(target)}, layer "
        f"{LAYERS[room(target)]})"
        for name, targets in graph.items()
        for target in sorted(targets)
        if room(target) != room(name) and room(name) in LAYERS and room(target) in LAYERS
        and LAYERS[room(target)] >= LAYERS[room(name)]
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_nothing_imports_the_cli(graph):
    assert not [name for name, targets in graph.items() if any(room(t) == "cli" for t in targets) and room(name) != "cli"]
