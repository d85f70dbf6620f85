"""`profiles` (feature tables, data) and `train` sit on separate layers: no cycle, lazy or not."""

from __future__ import annotations

import ast
from pathlib import Path

import phenoadapt

ROOT = Path(phenoadapt.__file__).parent


def _room(module: str) -> str:
    """The first-level room of a dotted module name inside phenoadapt ("train", "demo"...)."""
    return module.split(".")[0]


def _imports(path: Path) -> set[str]:
    """Rooms of phenoadapt imported anywhere in ``path``, inside functions too."""
    here = path.relative_to(ROOT).with_suffix("").parts
    package = here[:-1]  # the package a relative import starts from
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join((*base, node.module or ""))
            names = [target] if node.module or base else [a.name for a in node.names]
            found.update(_room(n) for n in names if n)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            found.update(
                _room(n.removeprefix("phenoadapt."))
                for n in names
                if n and n.startswith("phenoadapt.")
            )
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        room = _room(".".join(path.relative_to(ROOT).with_suffix("").parts))
        graph.setdefault(room, set()).update(_imports(path) - {room})
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        room = todo.pop()
        if room == goal:
            return True
        if room not in seen:
            seen.add(room)
            todo.extend(graph.get(room, ()))
    return False


def test_profiles_never_reaches_train_or_pipeline() -> None:
    graph = _graph()
    assert "profiles" in graph["train"]  # train reads feature tables (PhenoProfiler targets)
    for upper in ("train", "pipeline"):
        assert not _reaches(graph, "profiles", upper), f"profiles imports {upper} (a cycle)"


def test_the_graph_sees_lazy_imports() -> None:
    # The checker itself must count an import inside a function.
    assert "train" in _imports(ROOT / "pipeline" / "tables.py")
    assert "pipeline" in _imports(ROOT / "cli" / "train.py")  # imported inside run_train


def test_episode_and_context_sizes_come_from_the_one_default() -> None:
    """The paper's 64 treated + 128 controls are written once, in adapt/methods.py."""
    import inspect

    from phenoadapt.adapt.methods import (
        DEFAULT_CONTROLS_PER_CONTEXT,
        DEFAULT_TREATED_PER_CONTEXT,
        ContextSpec,
    )
    from phenoadapt.evaluate.label_shift import PlateLabelShiftSampler
    from phenoadapt.pipeline import TrainRunConfig
    from phenoadapt.train import TrainConfig
    from phenoadapt.train.samplers import LabelShiftSampler, PlateEpisodeSampler

    want = (DEFAULT_TREATED_PER_CONTEXT, DEFAULT_CONTROLS_PER_CONTEXT)
    for config in (TrainConfig(), TrainRunConfig()):
        assert (config.treated_per_episode, config.controls_per_episode) == want
    episodes = inspect.signature(PlateEpisodeSampler).parameters
    assert (
        episodes["treated_per_episode"].default,
        episodes["controls_per_episode"].default,
    ) == want
    for cls in (LabelShiftSampler, PlateLabelShiftSampler):
        params = inspect.signature(cls).parameters
        assert (
            params["treated_per_context"].default,
            params["controls_per_context"].default,
        ) == want
    assert ContextSpec().controls_per_context == DEFAULT_CONTROLS_PER_CONTEXT
