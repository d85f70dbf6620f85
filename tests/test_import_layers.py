"""No import cycles inside phenoadapt, lazy (function-level) imports included.

The walk reads every module's source (nothing is imported), resolves each
``import``/``from ... import`` that names a phenoadapt module, wherever it
stands in the file, and looks for strongly connected components of the graph.
The cycles this guards against were ``demo <-> pipeline.run`` (the default
model is now found through ``phenoadapt.models``) and ``cells.segment <->
cells.cellpose_backend`` (backends are reached through ``cells.backends``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import phenoadapt

ROOT = Path(phenoadapt.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict) -> list[str]:
    """The phenoadapt modules an import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        # "from .pkg import name": the submodule when name is one, else the package.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
        return []
    out = []
    for name in names:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the phenoadapt modules it imports, at any level of the file."""
    modules = _modules()
    graph = {}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {
            t for node in ast.walk(tree) for t in _targets(node, module, is_package, modules)
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_walk_sees_lazy_imports() -> None:
    graph = import_graph()
    # pipeline.run imports the default model's module; cells.backends imports the
    # cellpose backend only inside a function.
    assert "phenoadapt.models" in graph["phenoadapt.pipeline.run"]
    assert "phenoadapt.cells.cellpose_backend" in graph["phenoadapt.cells.backends"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "phenoadapt.demo" not in graph["phenoadapt.pipeline.run"]
    assert "phenoadapt.cells.segment" not in graph["phenoadapt.cells.cellpose_backend"]
    assert cycles(graph) == []
