"""Shared data preparation of the benchmarks on synthetic plates (not a benchmark itself).

:func:`prepare_crops` writes synthetic Cell Painting plates of several labs and
batches once into a cache folder, cuts one crop per ground-truth cell
(:class:`phenoadapt.cells.CropStream` at the centroids of
``ground_truth/cells.csv``) and saves

- ``crops.npy``: uint16 ``(n, 5, size, size)`` raw intensities (rounded after
  resampling; uint16 keeps the cache a quarter of float32 and loses nothing a
  log-normalized network sees);
- ``cells.csv``: the ground-truth row of each crop (plate, lab, batch, well,
  role, MoA, response...);
- ``settings.json``: what was generated; a rerun with the same settings loads
  the cache instead of generating again.

Used by ``bench_domain_shift.py`` and ``bench_throughput.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenoadapt import schema
from phenoadapt.cells import CropParams, CropStream
from phenoadapt.plate import open_plate
from phenoadapt.plate.synthetic import (
    BatchEffects,
    EffectStrengths,
    LabEffects,
    SyntheticPlateConfig,
    generate_plate,
    read_cells,
)

CROPS_FILE, CELLS_FILE, SETTINGS_FILE = "crops.npy", "cells.csv", "settings.json"
Log = Callable[[str], None]


@dataclass(frozen=True)
class PlateSpec:
    """One plate of the design: its lab and batch (1-based) and its index within the batch."""

    lab: int
    batch: int
    plate: int

    @property
    def plate_id(self) -> str:
        """Plate name, as :func:`phenoadapt.plate.synthetic.plate_name` spells it."""
        return f"lab{self.lab}_batch{self.batch}_plate{self.plate}"


def design(batches: dict[int, Sequence[int]]) -> list[PlateSpec]:
    """Plates of a design given as ``{lab: [plates in batch 1, plates in batch 2, ...]}``."""
    return [
        PlateSpec(lab, b, p)
        for lab, per_batch in sorted(batches.items())
        for b, n in enumerate(per_batch, start=1)
        for p in range(1, n + 1)
    ]


@dataclass(frozen=True)
class DataSettings:
    """Everything that determines the cached crops (compared with the cache on reuse)."""

    plates: tuple[PlateSpec, ...]
    n_wells: int = 96
    sites: int = 1
    field_size: int = 256
    crop_size: int = 24
    crop_scale: float = 0.5
    effect_strength: float = 1.0
    wells: tuple[str, ...] | None = None
    seed: int = 0

    def to_json(self) -> str:
        """Canonical JSON of the settings."""
        return json.dumps(asdict(self), sort_keys=True)


def _seed(*keys: int) -> np.random.Generator:
    """Independent stream per (experiment seed, level, lab, batch, plate) key."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def generate_plates(settings: DataSettings, folder: Path, workers: int | None, log: Log) -> None:
    """Write every plate of the design into ``folder`` (lab and batch effects shared)."""
    strengths = EffectStrengths().scaled(settings.effect_strength)
    config = SyntheticPlateConfig(
        n_wells=settings.n_wells,
        sites=settings.sites,
        field_shape=(settings.field_size, settings.field_size),
        strengths=strengths,
        wells=settings.wells,
    )
    labs: dict[int, LabEffects] = {}
    batches: dict[tuple[int, int], BatchEffects] = {}
    for spec in settings.plates:
        labs.setdefault(spec.lab, LabEffects.sample(_seed(settings.seed, 1, spec.lab), strengths))
        key = (spec.lab, spec.batch)
        batches.setdefault(key, BatchEffects.sample(_seed(settings.seed, 2, *key), strengths))
        started = time.perf_counter()
        generate_plate(
            folder,
            config,
            seed=np.random.SeedSequence([settings.seed, 3, spec.lab, spec.batch, spec.plate]),
            plate_id=spec.plate_id,
            lab_id=f"lab{spec.lab}",
            batch_id=f"lab{spec.lab}_batch{spec.batch}",
            lab=labs[spec.lab],
            batch=batches[key],
            overwrite=True,
            workers=workers,
        )
        log(f"  plate {spec.plate_id}: {time.perf_counter() - started:.1f} s")


def crop_plates(settings: DataSettings, folder: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Crops at the ground-truth cells of every plate, and their rows."""
    params = CropParams(size=settings.crop_size, scale=settings.crop_scale, border="pad")
    crops: list[np.ndarray] = []
    rows: list[pd.DataFrame] = []
    for spec in settings.plates:
        path = folder / spec.plate_id
        stream = CropStream(open_plate(path), cells=read_cells(path), crop=params, batch_size=4096)
        for batch in stream:
            crops.append(np.clip(np.rint(batch.crops), 0, 65535).astype(np.uint16))
            rows.append(batch.cells)
        if stream.failures:
            raise RuntimeError(f"Fields of {spec.plate_id} failed: {stream.failures[:3]}")
    return np.concatenate(crops), pd.concat(rows, ignore_index=True)


def prepare_crops(
    work_dir: Path | str,
    settings: DataSettings,
    *,
    workers: int | None = None,
    log: Log = print,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Crops and cell table of the design, generated once and cached in ``work_dir``.

    Parameters
    ----------
    work_dir
        Cache folder; plates go to ``work_dir/plates``.
    settings
        The design, plate format, crop size and seed.
    workers
        Processes that render fields (None: one per CPU).
    log
        Receives progress lines.

    Returns
    -------
    (crops, cells)
        uint16 ``(n, 5, size, size)`` crops (channels DNA, ER, RNA, AGP, Mito)
        and one ground-truth row per crop.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    settings_path = work / SETTINGS_FILE
    if settings_path.exists() and settings_path.read_text() == settings.to_json():
        log(f"using cached crops in {work}")
        crops = np.load(work / CROPS_FILE)
        return crops, pd.read_csv(work / CELLS_FILE)
    settings_path.unlink(missing_ok=True)
    started = time.perf_counter()
    log(f"generating {len(settings.plates)} plates in {work / 'plates'}")
    generate_plates(settings, work / "plates", workers, log)
    crops, cells = crop_plates(settings, work / "plates")
    np.save(work / CROPS_FILE, crops)
    cells.to_csv(work / CELLS_FILE, index=False)
    # Written last: its presence means the cache is complete.
    settings_path.write_text(settings.to_json())
    log(f"{len(cells)} cells cropped in {time.perf_counter() - started:.0f} s")
    return crops, cells


def plate_folder(work_dir: Path | str, plate_id: str) -> Path:
    """Folder of a generated plate in the cache."""
    return Path(work_dir) / "plates" / plate_id


def count_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per plate by role (for the docs)."""
    return cells.groupby([schema.PLATE, schema.ROLE]).size().unstack(fill_value=0).reset_index()
