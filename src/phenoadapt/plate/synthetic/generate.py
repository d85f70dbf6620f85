"""Writing synthetic plates and experiments to disk.

:func:`generate_plate` writes one plate folder (see :mod:`.files` for the
layout); :func:`generate_experiment` writes labs x batches x plates of them and
an ``experiment.csv`` manifest.  Fields are rendered one well per task, in a
process pool when there are enough of them; each field has its own seed, so
the bytes written do not depend on the number of workers.

Seeds: a plate's seed gives, through named children, its lab (when not
given), batch (when not given), plate effects, plate map and one stream per
(well, site).  An experiment's seed gives each lab, each batch and each plate
its own child, so adding labs or plates leaves the existing ones unchanged.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ... import __version__, schema
from ...errors import Cancelled, OptionError
from ...export import OutputExistsError, to_csv_safe
from ...progress import CancelFn, ProgressFn
from ..channel_map import CHANNEL_MAP_FILE, format_channel_map
from ..channels import make_channels
from ..platemap import PlateMap, write_platemap
from ..wells import well_position
from .config import CHANNEL_NAMES, SyntheticPlateConfig
from .design import design_plate
from .effects import BatchEffects, LabEffects, PlateEffects
from .field import FieldSpec, Seed, child_seed, render_spec
from .files import (
    CELLS_FILE,
    EFFECTS_FILE,
    EXPERIMENT_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    GROUND_TRUTH_DIR,
    MASKS_DIR,
    PLATEMAP_FILE,
    is_synthetic_plate,
    mask_path,
    plane_name,
    write_tiff,
)
from .phenotypes import COMPOUNDS

# Children of a plate's seed.
_LAB, _BATCH, _PLATE, _DESIGN, _FIELD = 1, 2, 3, 4, 5
# Below this many fields a process pool costs more than it saves.
_MIN_FIELDS_FOR_POOL = 24


@dataclass(frozen=True)
class SyntheticPlate:
    """A synthetic plate written to disk.

    Attributes
    ----------
    plate_id
        Plate name (also the folder name).
    path
        The plate folder.
    lab_id, batch_id
        Names of its lab and batch.
    lab, batch, effects
        The technical effects it was imaged with.
    moa_proportions
        Share of treated wells per MoA (unequal under label shift).
    n_fields, n_cells
        Number of fields written and of labelled cells in them.
    """

    plate_id: str
    path: Path
    lab_id: str
    batch_id: str
    lab: LabEffects
    batch: BatchEffects
    effects: PlateEffects
    moa_proportions: dict[str, float]
    n_fields: int
    n_cells: int

    @property
    def platemap_path(self) -> Path:
        """The plate map CSV."""
        return self.path / PLATEMAP_FILE

    @property
    def ground_truth_dir(self) -> Path:
        """Folder of the masks, ``cells.csv`` and ``effects.json``."""
        return self.path / GROUND_TRUTH_DIR

    @property
    def cells_path(self) -> Path:
        """The per-cell ground-truth CSV."""
        return self.ground_truth_dir / CELLS_FILE


@dataclass(frozen=True)
class SyntheticExperiment:
    """Several synthetic plates from several labs and batches.

    Attributes
    ----------
    path
        Folder holding the plate folders and ``experiment.csv``.
    plates
        The plates, in the order lab, batch, plate.
    manifest
        ``experiment.csv`` as a DataFrame: plate, lab, batch, path (relative), cells.
    """

    path: Path
    plates: list[SyntheticPlate] = field(default_factory=list)
    manifest: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class _WellTask:
    """Everything a worker needs to render and write the fields of one well."""

    specs: tuple[FieldSpec, ...]
    seeds: tuple[np.random.SeedSequence, ...]
    config: SyntheticPlateConfig
    lab: LabEffects
    batch: BatchEffects
    plate: PlateEffects
    folder: Path


def _render_well(task: _WellTask) -> pd.DataFrame:
    """Render and write every site of one well; return its per-cell table."""
    tables = []
    for spec, seed in zip(task.specs, task.seeds, strict=True):
        result = render_spec(spec, task.config, task.lab, task.batch, task.plate, seed)
        for c in range(len(CHANNEL_NAMES)):
            write_tiff(task.folder / plane_name(spec.well, spec.site, c + 1), result.image[c])
        write_tiff(mask_path(task.folder, spec.well, spec.site, "nuclei"), result.nuclei)
        write_tiff(mask_path(task.folder, spec.well, spec.site, "cells"), result.cells)
        tables.append(result.table)
    return pd.concat(tables, ignore_index=True)


def _pool_context() -> multiprocessing.context.BaseContext:
    """Start method for the workers.

    Forking is fastest and works from scripts without a ``__main__`` guard, but
    forking a process that runs other threads (napari, a GUI worker) can
    deadlock; then workers start fresh from a fork server (or are spawned).
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _resolve_workers(workers: int | None, n_fields: int) -> int:
    if workers is not None:
        if workers < 1:
            raise OptionError(f"workers must be at least 1, got {workers}.")
        return workers
    if n_fields < _MIN_FIELDS_FOR_POOL:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


@contextmanager
def _executor(workers: int) -> Iterator[Executor | None]:
    if workers <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_tasks(
    tasks: list[_WellTask],
    executor: Executor | None,
    stage: str,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> list[pd.DataFrame]:
    """Run the well tasks inline or in the pool, reporting progress and honouring cancel."""
    total = len(tasks)
    results: list[pd.DataFrame | None] = [None] * total

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise Cancelled(
                f"Generation of plate {stage} was cancelled; its partial folder was removed."
            )

    if executor is None:
        for i, task in enumerate(tasks):
            check_cancel()
            results[i] = _render_well(task)
            if progress is not None:
                progress(stage, i + 1, total)
    else:
        futures: dict[Future, int] = {
            executor.submit(_render_well, t): i for i, t in enumerate(tasks)
        }
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(stage, done, total)
                check_cancel()
        finally:
            # On cancel or error, drop the queued wells and let running ones finish
            # before the caller removes the partial folder they write into.
            for future in futures:
                future.cancel()
            wait([f for f in futures if not f.cancelled()])
    return [r for r in results if r is not None]


def _check_free(folder: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder (unless it is a synthetic plate and overwrite)."""
    if not (folder.is_dir() and any(folder.iterdir())):
        if folder.exists() and not folder.is_dir():
            raise OutputExistsError(f"{folder} is a file: choose another output folder.")
        return
    if not overwrite:
        raise OutputExistsError(
            f"The plate folder {folder} already exists and is not empty: choose another "
            "output folder, or pass --overwrite (overwrite=True) to replace it."
        )
    if not is_synthetic_plate(folder):
        raise OutputExistsError(
            f"{folder} is not empty and is not a synthetic plate, so it is not replaced even "
            "with overwrite: remove it yourself or choose another output folder."
        )


def _prepare_folder(folder: Path, overwrite: bool) -> Path:
    """Check that ``folder`` may be written and return the temporary folder to write into."""
    _check_free(folder, overwrite)
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / GROUND_TRUTH_DIR / MASKS_DIR).mkdir(parents=True)
    return tmp


def _field_specs(platemap: pd.DataFrame, sites: int) -> list[tuple[FieldSpec, ...]]:
    specs = []
    for row in platemap.itertuples(index=False):
        well, treatment, moa, conc = row[0], row[1], row[2], float(row[3])
        response = COMPOUNDS[treatment].response(conc)
        specs.append(
            tuple(FieldSpec(well, s, treatment, moa, conc, response) for s in range(1, sites + 1))
        )
    return specs


def _effects_record(plate: SyntheticPlate, config: SyntheticPlateConfig, seed: Seed) -> dict:
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "phenoadapt_version": __version__,
        "plate_id": plate.plate_id,
        "lab_id": plate.lab_id,
        "batch_id": plate.batch_id,
        "seed": {"entropy": str(seq.entropy), "spawn_key": list(seq.spawn_key)},
        "channels": list(CHANNEL_NAMES),
        "lab": asdict(plate.lab),
        "batch": asdict(plate.batch),
        "plate": asdict(plate.effects),
        "moa_proportions": plate.moa_proportions,
        "config": asdict(config),
    }


def _write_plate(
    out_dir: Path,
    config: SyntheticPlateConfig,
    seed: Seed,
    plate_id: str,
    lab_id: str,
    batch_id: str,
    lab: LabEffects | None,
    batch: BatchEffects | None,
    plate_effects: PlateEffects | None,
    overwrite: bool,
    executor: Executor | None,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> SyntheticPlate:
    folder = Path(out_dir) / plate_id
    strengths = config.strengths

    def rng(key: int) -> np.random.Generator:
        return np.random.default_rng(child_seed(seed, key))

    lab = lab or LabEffects.sample(rng(_LAB), strengths)
    batch = batch or BatchEffects.sample(rng(_BATCH), strengths)
    plate_effects = plate_effects or PlateEffects.sample(rng(_PLATE), strengths)
    platemap, proportions = design_plate(config, rng(_DESIGN))

    tmp = _prepare_folder(folder, overwrite)
    try:
        tasks = [
            _WellTask(
                specs=specs,
                seeds=tuple(
                    child_seed(seed, _FIELD, *well_position(s.well), s.site) for s in specs
                ),
                config=config,
                lab=lab,
                batch=batch,
                plate=plate_effects,
                folder=tmp,
            )
            for specs in _field_specs(platemap, config.sites)
        ]
        tables = _run_tasks(tasks, executor, plate_id, progress, cancel)
        cells = pd.concat(tables, ignore_index=True)
        cells.insert(0, schema.PLATE, plate_id)
        cells[schema.LAB] = lab_id
        cells[schema.BATCH] = batch_id
        to_csv_safe(cells, tmp / GROUND_TRUTH_DIR / CELLS_FILE)
        write_platemap(
            PlateMap(platemap, plate_format=config.n_wells, plate_id=plate_id),
            tmp / PLATEMAP_FILE,
        )
        # Name the channels as an instrument's metadata would: the files are numbered ch1..ch5.
        channels = make_channels([str(i + 1) for i in range(len(CHANNEL_NAMES))], CHANNEL_NAMES)
        (tmp / CHANNEL_MAP_FILE).write_text(format_channel_map(channels), encoding="utf-8")
        plate = SyntheticPlate(
            plate_id=plate_id,
            path=folder,
            lab_id=lab_id,
            batch_id=batch_id,
            lab=lab,
            batch=batch,
            effects=plate_effects,
            moa_proportions=proportions,
            n_fields=len(platemap) * config.sites,
            n_cells=len(cells),
        )
        record = _effects_record(plate, config, seed)
        (tmp / GROUND_TRUTH_DIR / EFFECTS_FILE).write_text(json.dumps(record, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return plate


def generate_plate(
    out_dir: Path | str,
    config: SyntheticPlateConfig | None = None,
    *,
    seed: Seed = 0,
    plate_id: str = "synthetic",
    lab_id: str = "lab1",
    batch_id: str = "batch1",
    lab: LabEffects | None = None,
    batch: BatchEffects | None = None,
    plate_effects: PlateEffects | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> SyntheticPlate:
    """Write one synthetic Cell Painting plate to ``out_dir/plate_id``.

    Parameters
    ----------
    out_dir
        Folder that receives the plate folder (created if needed).
    config
        Plate settings; :class:`SyntheticPlateConfig` defaults when None.
    seed
        Seed of the plate: same seed and settings give the same bytes.
    plate_id
        Plate name and folder name.
    lab_id, batch_id
        Names written to ``cells.csv`` and ``effects.json``.
    lab, batch, plate_effects
        Technical effects; drawn from the seed with ``config.strengths`` when None.
    overwrite
        Replace an existing synthetic plate folder of the same name.
    workers
        Worker processes; None picks one per CPU for plates of 24 fields or more.
    progress
        Called as ``progress(plate_id, wells_done, wells_total)``.
    cancel
        Polled between wells; when it returns True, the partial plate is removed
        and :class:`~phenoadapt.errors.Cancelled` is raised.

    Returns
    -------
    SyntheticPlate

    Raises
    ------
    OutputExistsError
        When the plate folder exists and is not empty (and ``overwrite`` is off,
        or the folder is not a synthetic plate).
    """
    config = config or SyntheticPlateConfig()
    n_workers = _resolve_workers(workers, len(config.imaged_wells()) * config.sites)
    with _executor(n_workers) as executor:
        return _write_plate(
            Path(out_dir),
            config,
            seed,
            plate_id,
            lab_id,
            batch_id,
            lab,
            batch,
            plate_effects,
            overwrite,
            executor,
            progress,
            cancel,
        )


def plate_name(lab: int, batch: int, plate: int) -> str:
    """Plate id in an experiment, from 1-based indices: ``lab1_batch1_plate2``."""
    return f"lab{lab}_batch{batch}_plate{plate}"


def generate_experiment(
    out_dir: Path | str,
    *,
    labs: int = 2,
    batches_per_lab: int = 1,
    plates_per_batch: int = 1,
    config: SyntheticPlateConfig | None = None,
    seed: Seed = 0,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> SyntheticExperiment:
    """Write plates from several labs and batches, and an ``experiment.csv`` manifest.

    Parameters
    ----------
    out_dir
        Folder that receives one folder per plate and ``experiment.csv``.
    labs, batches_per_lab, plates_per_batch
        Size of the design; plates are named ``lab{l}_batch{b}_plate{p}``.
    config
        Settings shared by every plate.
    seed
        Seed of the experiment.
    overwrite
        Replace existing synthetic plate folders and manifest.
    workers
        Worker processes (see :func:`generate_plate`).
    progress
        Called as ``progress("plate i/n: <plate_id>", wells_done, wells_total)``.
    cancel
        Polled between wells; cancels the plate being written (finished plates stay).

    Returns
    -------
    SyntheticExperiment
    """
    for name, value in (
        ("labs", labs),
        ("batches_per_lab", batches_per_lab),
        ("plates_per_batch", plates_per_batch),
    ):
        if value < 1:
            raise OptionError(f"{name} must be at least 1, got {value}.")
    config = config or SyntheticPlateConfig()
    out = Path(out_dir)
    layout = [
        (lab, b, p)
        for lab in range(1, labs + 1)
        for b in range(1, batches_per_lab + 1)
        for p in range(1, plates_per_batch + 1)
    ]
    manifest_path = out / EXPERIMENT_FILE
    if manifest_path.exists() and not overwrite:
        raise OutputExistsError(
            f"{manifest_path} already exists: choose another output folder, or pass "
            "--overwrite (overwrite=True) to replace the experiment."
        )
    for lab, b, p in layout:  # all checks before any work
        _check_free(out / plate_name(lab, b, p), overwrite)
    out.mkdir(parents=True, exist_ok=True)

    strengths = config.strengths
    lab_effects = {
        lab: LabEffects.sample(np.random.default_rng(child_seed(seed, _LAB, lab)), strengths)
        for lab in range(1, labs + 1)
    }
    batch_effects = {
        (lab, b): BatchEffects.sample(
            np.random.default_rng(child_seed(seed, _BATCH, lab, b)), strengths
        )
        for lab in range(1, labs + 1)
        for b in range(1, batches_per_lab + 1)
    }
    plates: list[SyntheticPlate] = []
    n_workers = _resolve_workers(workers, len(layout) * len(config.imaged_wells()) * config.sites)
    with _executor(n_workers) as executor:
        for i, (lab, b, p) in enumerate(layout, start=1):
            plate_id = plate_name(lab, b, p)
            stage = f"plate {i}/{len(layout)}: {plate_id}"
            plates.append(
                _write_plate(
                    out,
                    config,
                    child_seed(seed, _PLATE, lab, b, p),
                    plate_id,
                    f"lab{lab}",
                    f"lab{lab}_batch{b}",
                    lab_effects[lab],
                    batch_effects[(lab, b)],
                    None,
                    overwrite,
                    executor,
                    None if progress is None else _staged(progress, stage),
                    cancel,
                )
            )
    manifest = pd.DataFrame(
        {
            schema.PLATE: [pl.plate_id for pl in plates],
            schema.LAB: [pl.lab_id for pl in plates],
            schema.BATCH: [pl.batch_id for pl in plates],
            "path": [pl.path.name for pl in plates],
            "n_cells": [pl.n_cells for pl in plates],
        }
    )
    to_csv_safe(manifest, manifest_path)
    return SyntheticExperiment(path=out, plates=plates, manifest=manifest)


def _staged(progress: ProgressFn, stage: str) -> ProgressFn:
    return lambda _plate, done, total: progress(stage, done, total)
