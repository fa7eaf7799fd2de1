"""The layout's rules, read from the source: data flows one way, and no two modules import each other in a circle."""
from __future__ import annotations

import ast
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "components", "serving", "kubeflow", "image_retrain")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The project modules `path` imports (a `from package import name` counts the submodule when there is one)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def test_serving_imports_nothing_of_the_pipeline_side():
    modules = _modules()
    for name, path in modules.items():
        if name.split(".")[0] == "serving":
            crossing = {imported for imported in _imports(path, top_level_only=False)
                        if imported.split(".")[0] != "serving"}
            assert not crossing, f"{name} imports {sorted(crossing)}: serving/ must stand alone"


def test_no_import_circles():
    modules = _modules()
    graph = {name: {imported for imported in _imports(path, top_level_only=False) if imported in modules} - {name}
             for name, path in modules.items()}
    # A package's __init__ is imported on the way to its submodules; only real module-to-module edges count.
    graph = {name: {target for target in targets if not name.startswith(target + ".")}
             for name, targets in graph.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circle = trail[trail.index(target):] + [target] if target in trail else [name, target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_every_module_says_what_it_is_for():
    for name, path in _modules().items():
        if os.path.basename(path) == "__init__.py" and not path.read_text().strip():
            continue
        assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no module docstring"
