"""File names and ground-truth files of a synthetic plate folder.

A plate folder looks like an Opera Phenix export plus the truth::

    <plate_id>/
        r03c05f01p01-ch1sk1fk1fl1.tiff     one uint16 plane per (well, site, channel)
        ...                                  ch1..ch5 = DNA, ER, RNA, AGP, Mito
        platemap.csv                         one row per well
        ground_truth/
            cells.csv                        one row per labelled cell
            effects.json                     lab, batch and plate effects, settings, seed
            masks/C05_f01_nuclei.tiff        uint16 nucleus labels (label = cell id)
            masks/C05_f01_cells.tiff         uint16 cell labels
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from ...errors import PlateReadError
from ...export import restore_formulas
from ..wells import normalize_well, well_position

PLATEMAP_FILE = "platemap.csv"
GROUND_TRUTH_DIR = "ground_truth"
CELLS_FILE = "cells.csv"
EFFECTS_FILE = "effects.json"
MASKS_DIR = "masks"
EXPERIMENT_FILE = "experiment.csv"
FORMAT_NAME = "phenoadapt-synthetic-plate"
FORMAT_VERSION = 1


def plane_name(well: str, site: int, channel: int) -> str:
    """Opera Phenix file name of a plane: ``r03c05f01p01-ch1sk1fk1fl1.tiff``.

    Parameters
    ----------
    well
        Well name (``C05``).
    site
        Site number from 1.
    channel
        Channel number from 1 (1 = DNA ... 5 = Mito).
    """
    row, col = well_position(well)
    return f"r{row:02d}c{col:02d}f{site:02d}p01-ch{channel}sk1fk1fl1.tiff"


def mask_path(plate_dir: Path | str, well: str, site: int, kind: str) -> Path:
    """Path of a ground-truth mask; ``kind`` is ``"nuclei"`` or ``"cells"``."""
    if kind not in ("nuclei", "cells"):
        raise ValueError(f"Mask kind must be 'nuclei' or 'cells', got {kind!r}.")
    name = f"{normalize_well(well)}_f{site:02d}_{kind}.tiff"
    return Path(plate_dir) / GROUND_TRUTH_DIR / MASKS_DIR / name


def write_tiff(path: Path, array: np.ndarray) -> None:
    """Write a 2-D uint16 plane, zlib-compressed, with no timestamp (same bytes every time)."""
    tifffile.imwrite(
        path,
        array,
        photometric="minisblack",
        compression="zlib",
        compressionargs={"level": 1},
        predictor=True,
        metadata=None,
    )


def is_synthetic_plate(plate_dir: Path | str) -> bool:
    """True when ``plate_dir`` holds the effects file that every synthetic plate has."""
    return (Path(plate_dir) / GROUND_TRUTH_DIR / EFFECTS_FILE).is_file()


def _require_plate(plate_dir: Path | str) -> Path:
    path = Path(plate_dir)
    if not is_synthetic_plate(path):
        raise PlateReadError(
            f"{path} is not a synthetic plate folder: it has no {GROUND_TRUTH_DIR}/{EFFECTS_FILE}. "
            "Point at a folder written by `phenoadapt synth` or generate_plate()."
        )
    return path


def read_cells(plate_dir: Path | str) -> pd.DataFrame:
    """The per-cell ground truth of a synthetic plate (``ground_truth/cells.csv``)."""
    path = _require_plate(plate_dir) / GROUND_TRUTH_DIR / CELLS_FILE
    return restore_formulas(pd.read_csv(path, dtype={"Metadata_Plate": str, "Metadata_Well": str}))


def read_effects(plate_dir: Path | str) -> dict:
    """The effects record of a synthetic plate (``ground_truth/effects.json``) as a dict."""
    path = _require_plate(plate_dir) / GROUND_TRUTH_DIR / EFFECTS_FILE
    return json.loads(path.read_text())


def read_masks(plate_dir: Path | str, well: str, site: int) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell label masks of one field of a synthetic plate.

    Returns
    -------
    nuclei, cells : uint16 arrays (y, x)
    """
    plate = _require_plate(plate_dir)
    paths = [mask_path(plate, well, site, kind) for kind in ("nuclei", "cells")]
    for p in paths:
        if not p.is_file():
            raise PlateReadError(
                f"No ground-truth mask {p.name} in {p.parent}: well {well}, site {site} "
                "was not generated on this plate."
            )
    nuclei, cells = (tifffile.imread(p) for p in paths)
    return nuclei, cells
