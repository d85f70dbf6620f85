"""The record of a prediction run: what produced a set of tables, and its run id.

A result table is only worth keeping if one can say later which model, method,
seed, contexts and segmentation made it.  :func:`run_record` gathers those
settings into a JSON-ready dictionary (written as ``run.json`` next to the
exported tables by :func:`phenoadapt.export.run_json`; every table carries the id in
``Metadata_RunID``) and :func:`run_id` names the run by a hash of them.  The id
hashes the settings, the model files' contents and the plate ids, never a
time or a folder path, so the same run on the same plates gets the same id
(and byte-identical tables) on any machine, and a different model or seed
gets another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__

_ID_LENGTH = 12  # hex digits: 48 bits, ample to tell a lab's runs apart


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def json_ready(value: Any) -> Any:
    """``value`` made of dicts, lists, strings, numbers, booleans and None only."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_ready(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [json_ready(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _checkpoint_paths(checkpoint: Any) -> list[Path]:
    if checkpoint is None:
        from ..models import default_model_path

        return [default_model_path()]
    if isinstance(checkpoint, (str, os.PathLike)):
        return [Path(checkpoint)]
    return [Path(p) for p in checkpoint]


def _models(checkpoint: Any) -> list[dict[str, str]]:
    return [
        {"file": str(path), "name": path.name, "sha256": file_sha256(path)}
        for path in _checkpoint_paths(checkpoint)
    ]


def run_record(
    config: Any,
    plates: Sequence[Any],
    result: Any,
    *,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The settings and provenance of a finished run, with its :func:`run_id`.

    Parameters
    ----------
    config
        The run's :class:`~phenoadapt.pipeline.RunConfig`.
    plates
        The plates run (their ``plate_id`` and ``path`` are recorded).
    result
        The :class:`~phenoadapt.pipeline.RunResult` (methods used, segmentation,
        unit, cell and failure counts).
    created
        When the run ended (default: now, UTC); not part of the id.

    Returns
    -------
    dict
        JSON-ready: ``run_id``, ``phenoadapt_version``, ``models`` (file, name,
        sha256), ``method`` asked and ``methods_used`` per plate, ``seed``,
        ``contexts``, ``segmentation``, ``settings`` (the whole config),
        ``plates``, ``unit``, ``n_cells``, ``n_failed_fields`` and ``created``.
    """
    settings = json_ready(config)
    settings.pop("checkpoint", None)  # recorded as models, with their hashes
    contexts = {
        key: settings[key]
        for key in settings
        if "context" in key or key in ("min_controls", "min_control_sites", "allow_fallback")
    }
    segmentation = getattr(result, "segmentation", None)
    record: dict[str, Any] = {
        "phenoadapt_version": __version__,
        "models": _models(getattr(config, "checkpoint", None)),
        "method": settings.get("method"),
        "methods_used": json_ready(dict(getattr(result, "methods", {}) or {})),
        "seed": settings.get("seed"),
        "contexts": contexts,
        "segmentation": json_ready(segmentation) if segmentation is not None else None,
        "unit": getattr(result, "unit", "cell"),
        "plates": [
            {"plate_id": str(p.plate_id), "folder": str(getattr(p, "path", "") or "")}
            for p in plates
        ],
        "settings": settings,
        "n_cells": int(len(result.cells)),
        "n_failed_fields": len(getattr(result, "failures", []) or []),
    }
    record["run_id"] = run_id(record)
    record["created"] = (created or datetime.now(UTC)).isoformat(timespec="seconds")
    return record


def run_id(record: dict[str, Any]) -> str:
    """A short, stable id of a run record: a hash of what determines the results.

    Machine-specific parts (folders, model file locations, the creation time)
    are left out, so the same model, settings and plates give the same id anywhere.
    """
    stable = {k: v for k, v in record.items() if k not in ("run_id", "created")}
    stable["models"] = [m["sha256"] for m in record.get("models", [])]
    stable["plates"] = [p["plate_id"] for p in record.get("plates", [])]
    text = json.dumps(stable, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_ID_LENGTH]


__all__ = ["file_sha256", "json_ready", "run_id", "run_record"]
