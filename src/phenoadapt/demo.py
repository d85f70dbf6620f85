"""The demo: a small shipped model, and synthetic plates of its training lab and of a new lab.

The shipped checkpoint (``models/demo_cs_arm_bn.safetensors``) is a small
ResNet-10 trained with CS-ARM-BN on synthetic plates of a *training lab*
(``scripts/train_demo_model.py``, see ``models/README.md``).  The demo plates
are new plates of that lab and of a *new lab* whose microscope differs (gains,
background, blur, magnification): a model normalized with its training
statistics (ERM) is fooled by the new lab's images, one normalized with the
new plate's own controls and treated cells (CS-ARM-BN) much less.

Both the training script and :func:`make_demo_plates` take their plate
settings and lab effects from this module, so the demo plates look like the
plates the model was trained on, except for what the new lab changes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import schema
from .adapt.methods import METHODS, MIN_CONTROLS, Method, parse_method
from .cells.params import SegmentationParams
from .errors import PhenoadaptError
from .models import DEFAULT_MODEL_FILE, default_model_path
from .plate.synthetic import (
    BatchEffects,
    LabEffects,
    SyntheticPlateConfig,
    generate_plate,
    is_synthetic_plate,
)
from .plate.synthetic.files import PLATEMAP_FILE
from .progress import CancelFn, ProgressFn, check_cancel

#: File name of the shipped demo checkpoint inside ``phenoadapt/models``.
DEMO_MODEL_FILE = DEFAULT_MODEL_FILE
#: Rows A-D of a 96-well plate: 48 wells, 8 of them DMSO controls (the control lattice).
DEMO_WELLS: tuple[str, ...] = tuple(f"{r}{c:02d}" for r in "ABCD" for c in range(1, 13))
#: Settings shared by the training plates and the demo plates.
DEMO_CONFIG = SyntheticPlateConfig(n_wells=96, sites=2, field_shape=(256, 256), wells=DEMO_WELLS)
#: Segmentation that suits the synthetic plates (nuclei about 16 pixels across).
DEMO_SEGMENTATION = SegmentationParams(nucleus_diameter=16)
TRAIN_LAB = "training_lab"
NEW_LAB = "new_lab"
#: File written next to the demo plates recording how they were made.
DEMO_RECORD = "demo.json"


def demo_model_path() -> Path:
    """Path of the shipped demo checkpoint: :func:`phenoadapt.models.default_model_path`.

    Raises
    ------
    PhenoadaptError
        When the package was installed without its model files.
    """
    return default_model_path()


def lab_effects(lab: str) -> LabEffects:
    """The microscope of the training lab (the reference instrument) or of the new lab.

    The new lab is fixed rather than drawn so that the demo always shows the same
    shift: its camera is brighter in DNA and Mito and dimmer in ER and AGP, its
    background higher, its optics blurrier and its magnification 10 % larger.
    """
    if lab == TRAIN_LAB:
        return LabEffects()
    if lab == NEW_LAB:
        return LabEffects(
            gain=(1.9, 0.55, 1.35, 0.5, 1.7),
            background=(420.0, 90.0, 300.0, 60.0, 380.0),
            offset=100.0,
            psf_sigma=1.5,
            chromatic=(1.0, 1.08, 0.95, 1.1, 0.92),
            magnification=1.1,
            shot_noise=1.3,
            read_noise=6.0,
            vignetting=0.35,
            tilt=0.08,
            tilt_angle=1.0,
        )
    raise ValueError(f"Unknown demo lab {lab!r}: use {TRAIN_LAB!r} or {NEW_LAB!r}.")


def batch_effects(seed: int) -> BatchEffects:
    """Stain and density effects of one batch, drawn from ``seed`` with the default spreads."""
    return BatchEffects.sample(np.random.default_rng(seed), DEMO_CONFIG.strengths)


@dataclass
class DemoPlates:
    """Demo plates on disk.

    Attributes
    ----------
    folder
        Folder holding the plate folders and ``demo.json``.
    plates, platemaps
        Plate folders and their plate-map CSVs, training-lab plate first.
    train_lab, new_lab
        Plate ids of the training-lab plate and of the new-lab plate.
    reused
        True when the plates were already there and were not regenerated.
    """

    folder: Path
    plates: list[Path] = field(default_factory=list)
    platemaps: list[Path] = field(default_factory=list)
    train_lab: str = ""
    new_lab: str = ""
    reused: bool = False


def _plan(seed: int) -> list[tuple[str, str, int, int]]:
    """(plate id, lab, plate seed, batch seed) of the two demo plates."""
    # Seeds far from those of the training plates (scripts/train_demo_model.py uses 1000+).
    return [
        (f"demo_{TRAIN_LAB}", TRAIN_LAB, 7_000 + 2 * seed, 8_000 + 2 * seed),
        (f"demo_{NEW_LAB}", NEW_LAB, 7_001 + 2 * seed, 8_001 + 2 * seed),
    ]


def make_demo_plates(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> DemoPlates:
    """Write (or reuse) a training-lab plate and a new-lab plate with their plate maps.

    Parameters
    ----------
    out_dir
        Folder that receives ``demo_training_lab/``, ``demo_new_lab/`` and ``demo.json``.
    seed
        Seed of the plates.  Plates already in ``out_dir`` made with the same seed
        are reused (plates are inputs; reusing them is what makes a rerun quick).
    overwrite
        Regenerate the plates even when they exist.
    progress
        ``progress("plates", wells_done, wells_total)`` over both plates.
    cancel
        Polled between wells; a cancelled plate is removed and
        :class:`~phenoadapt.errors.Cancelled` raised.

    Returns
    -------
    DemoPlates

    Raises
    ------
    PhenoadaptError
        When ``out_dir`` holds demo plates made with another seed (and not
        ``overwrite``), or other files where a plate folder should go.
    """
    folder = Path(out_dir)
    plan = _plan(seed)
    record_path = folder / DEMO_RECORD
    result = DemoPlates(folder, train_lab=plan[0][0], new_lab=plan[1][0])
    existing = all(is_synthetic_plate(folder / pid) for pid, *_ in plan)
    if existing and not overwrite:
        recorded = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if recorded.get("seed") != seed:
            raise PhenoadaptError(
                f"{folder} holds demo plates made with seed {recorded.get('seed')!r}, not {seed}: "
                "use another folder, the same seed, or overwrite=True (CLI: --overwrite)."
            )
        result.reused = True
    else:
        n_wells = len(DEMO_CONFIG.imaged_wells())
        for i, (plate_id, lab, plate_seed, batch_seed) in enumerate(plan):
            check_cancel(cancel, "Making the demo plates")
            done_before = i * n_wells

            def report(_plate: str, done: int, _total: int, base: int = done_before) -> None:
                if progress is not None:
                    progress("plates", base + done, len(plan) * n_wells)

            generate_plate(
                folder, DEMO_CONFIG, seed=plate_seed, plate_id=plate_id, lab_id=lab,
                batch_id=f"{lab}_demo", lab=lab_effects(lab), batch=batch_effects(batch_seed),
                overwrite=overwrite, workers=1, progress=report, cancel=cancel,
            )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps({"seed": seed, "plates": [p[0] for p in plan]}) + "\n")
    for plate_id, *_ in plan:
        result.plates.append(folder / plate_id)
        result.platemaps.append(folder / plate_id / PLATEMAP_FILE)
    return result


# --------------------------------------------------------------------------- the demo run

#: Every test-time method, in the order the demo shows them.
ALL_METHODS: tuple[str, ...] = tuple(m.value for m in Method)


@dataclass
class DemoRun:
    """What :func:`run_demo` wrote.

    Attributes
    ----------
    plates
        The demo plates used.
    results_dir
        The numbered results folder (``results-001``...).
    files
        Name -> file written (``cells_<method>``, ``wells_<method>``, ``accuracy``, ``summary``).
    accuracy
        Accuracy per plate and method (also in ``accuracy.csv``).
    """

    plates: DemoPlates
    results_dir: Path
    files: dict[str, Path]
    accuracy: Any


def next_results_dir(out_dir: Path) -> Path:
    """The first free ``results-NNN`` name in ``out_dir`` (earlier results are never touched)."""
    taken = [
        int(p.name.split("-")[1])
        for p in out_dir.glob("results-[0-9][0-9][0-9]")
        if p.name.split("-")[1].isdigit()
    ]
    return out_dir / f"results-{max(taken, default=0) + 1:03d}"


def summary_figure(accuracy: Any, path: Path, labels: dict[str, str] | None = None) -> Path:
    """Bar chart of cell and well accuracy per method and plate, saved as a PNG.

    Parameters
    ----------
    accuracy
        Table with ``Metadata_Plate``, ``method``, ``cell_accuracy``, ``well_accuracy``.
    path
        PNG file to write.
    labels
        Plate id -> label shown in the legend.
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend is ever touched

    from .palette import plate_colours

    labels = labels or {}
    methods = list(dict.fromkeys(accuracy["method"]))
    plates = list(dict.fromkeys(accuracy["Metadata_Plate"]))
    colours = plate_colours(plates)  # each plate its colour of the GUI's maps
    fig = Figure(figsize=(9, 3.8), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / max(len(plates), 1)
    x = np.arange(len(methods))
    for ax, column, title in zip(
        axes, ("cell_accuracy", "well_accuracy"), ("cells", "wells"), strict=True
    ):
        for i, plate in enumerate(plates):
            rows = accuracy[accuracy["Metadata_Plate"] == plate].set_index("method")
            values = [float(rows.loc[m, column]) if m in rows.index else np.nan for m in methods]
            bars = ax.bar(x + (i - (len(plates) - 1) / 2) * width, values, width,
                          label=labels.get(plate, plate),
                          color=colours.colour(plate))  # fmt: skip
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.set_xticks(x, [METHODS[parse_method(m)].label for m in methods], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"MoA accuracy of treated {title}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle("Demo model on a training-lab plate and a new-lab plate", fontsize=10)
    fig.savefig(path)
    return path


def run_demo(
    out_dir: str | os.PathLike,
    *,
    methods: Sequence[str] = ALL_METHODS,
    seed: int = 0,
    device: str = "auto",
    min_controls: int = MIN_CONTROLS["cell"],
    overwrite_plates: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> DemoRun:
    """Make (or reuse) the demo plates, predict them with the demo model, write tables and a figure.

    Parameters
    ----------
    out_dir
        Folder of the demo: plates go to ``out_dir/plates`` (reused on later
        runs), results to a new ``out_dir/results-NNN`` folder each run.
    methods
        Test-time methods to compare (default: all five).
    seed
        Seed of the plates and of the plate contexts.
    device
        Where the network runs.
    min_controls
        Fewest control cells a plate needs for BEN and CS-ARM-BN.
    overwrite_plates
        Regenerate the demo plates.
    progress, cancel
        Stages ``plates``, ``segment``, ``adapt``, ``predict``; a cancelled run
        leaves no results folder.

    Returns
    -------
    DemoRun
    """
    from .export import write_tables
    from .pipeline import RunConfig, run_methods
    from .plate import open_plate, read_platemap

    out = Path(out_dir)
    methods = [parse_method(m).value for m in methods]
    plates = make_demo_plates(
        out / "plates", seed=seed, overwrite=overwrite_plates, progress=progress, cancel=cancel
    )
    opened = [open_plate(p) for p in plates.plates]
    maps = [read_platemap(m) for m in plates.platemaps]
    config = RunConfig(checkpoint=demo_model_path(), device=device, seed=seed,
                       min_controls=min_controls,
                       segmentation=DEMO_SEGMENTATION, compare_unadapted=False,
                       return_embeddings=False)  # fmt: skip
    results = run_methods(opened, maps, methods, config, progress=progress, cancel=cancel)
    accuracy = pd.concat(
        [r.accuracy.assign(method=m) for m, r in results.items() if r.accuracy is not None],
        ignore_index=True,
    )
    lead = ["method", schema.PLATE]
    accuracy = accuracy[lead + [c for c in accuracy.columns if c not in lead]]
    # Rows in the order of the methods asked for, the training-lab plate first.
    order = {pid: i for i, pid in enumerate((plates.train_lab, plates.new_lab))}
    accuracy = accuracy.sort_values(
        ["method", schema.PLATE],
        key=lambda col: col.map({m: i for i, m in enumerate(methods)} if col.name == "method"
                                else order),
    ).reset_index(drop=True)  # fmt: skip
    labels = {plates.train_lab: "training lab (new plate)", plates.new_lab: "new lab"}
    accuracy.insert(2, "lab", accuracy[schema.PLATE].map(labels))
    tables = {}
    for method, result in results.items():
        tables[f"cells_{method}.csv"] = result.cells
        tables[f"wells_{method}.csv"] = result.wells
    tables["accuracy.csv"] = accuracy
    check_cancel(cancel, "The demo")
    # Write into a hidden folder and rename it: a results folder is complete or absent.
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".results-", dir=out))
    try:
        written = write_tables({staging / name: t for name, t in tables.items()})
        summary_figure(accuracy, staging / "summary.png", labels)
        final = next_results_dir(out)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = {p.stem: final / p.name for p in written}
    files["summary"] = final / "summary.png"
    return DemoRun(plates, final, files, accuracy)


__all__ = [
    "ALL_METHODS",
    "DemoRun",
    "next_results_dir",
    "run_demo",
    "summary_figure",
    "DEMO_CONFIG",
    "DEMO_MODEL_FILE",
    "DEMO_SEGMENTATION",
    "DEMO_WELLS",
    "NEW_LAB",
    "TRAIN_LAB",
    "DemoPlates",
    "batch_effects",
    "demo_model_path",
    "lab_effects",
    "make_demo_plates",
]
