"""Segmentation quality and speed, written into docs/segmentation.md.

Quality
    * synthetic fields (every MoA, several seeds) against the generator's
      ground-truth masks: object F1 at IoU 0.5 and cell counts;
    * the real Opera Phenix field (BR00143976, C03, site 3) against the
      CellProfiler nucleus and cell outlines shipped with it.

Speed
    Fields/s and cells/s of segmentation + measurement (shape, intensity and
    texture of 3 compartments x 5 channels) on 1080 x 1080 fields, with one
    process and with all cores: a temporary plate of ``--fields`` copies of the
    real field (``--field-dir``), or of synthetic 1080 x 1080 fields
    (``--synthetic``).

Usage::

    python benchmarks/bench_segmentation.py            # prints and updates docs/segmentation.md
    python benchmarks/bench_segmentation.py --no-write --fields 4
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from phenoadapt.cells import (
    SegmentationParams,
    labels_from_outlines,
    match_labels,
    segment_field,
    segment_plate,
)
from phenoadapt.cells.process import default_workers
from phenoadapt.plate import open_plate
from phenoadapt.plate.channels import make_channels
from phenoadapt.plate.synthetic import MOAS, SyntheticPlateConfig, render_field
from phenoadapt.plate.wells import PLATE_96

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "phenix_BR00143976"
DOC = ROOT / "docs" / "segmentation.md"
OVERLAY = ROOT / "docs" / "images" / "segmentation_overlay.png"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
CP5 = make_channels(["1", "2", "3", "4", "5"], ["DNA", "ER", "RNA", "AGP", "Mito"])
# Synthetic 1080 x 1080 fields at a 20x-like scale: nuclei ~40 px across, ~100 cells.
BIG = SyntheticPlateConfig(
    field_shape=(1080, 1080), nucleus_radius=20, cell_radius=50, cell_density=1e-4
)


def synthetic_quality(seeds: int) -> list[str]:
    """F1 of nuclei and cells against ground truth, per MoA, on 256 x 256 fields."""
    rows = [
        "| MoA | fields | true cells | found | nuclei F1 | cells F1 | cells mean IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    params = SegmentationParams(nucleus_diameter=16)
    totals = []
    for moa in ("DMSO", *MOAS):
        n_true = n_pred = 0
        f1n, f1c, iou = [], [], []
        for seed in range(seeds):
            field = render_field(moa=moa, seed=1000 + seed)
            seg = segment_field(field.image, CP5, params)
            nuclei = match_labels(field.nuclei.astype(np.int32), seg.nuclei)
            cells = match_labels(field.cells.astype(np.int32), seg.cells)
            n_true += cells.n_true
            n_pred += cells.n_pred
            f1n.append(nuclei.f1)
            f1c.append(cells.f1)
            iou.append(cells.mean_iou)
        totals.append((np.mean(f1n), np.mean(f1c)))
        rows.append(
            f"| {moa} | {seeds} | {n_true} | {n_pred} | {np.mean(f1n):.3f} | {np.mean(f1c):.3f} "
            f"| {np.nanmean(iou):.3f} |"
        )
    mean_n, mean_c = np.mean(totals, axis=0)
    rows.append(f"| **all** | {seeds * len(totals)} | | | **{mean_n:.3f}** | **{mean_c:.3f}** | |")
    return rows


def real_quality() -> list[str]:
    """Agreement with CellProfiler on the real field."""
    plate = open_plate(REAL)
    image = plate.read_field(*next(plate.fields()))
    rows = [
        "| threshold correction (cells) | nuclei F1 (all) | nuclei mean IoU | cells recall "
        "| cells F1 (CellProfiler's cells) | cells mean IoU |",
        "|---|---|---|---|---|---|",
    ]
    ref_n = labels_from_outlines(
        tifffile.imread(REAL / "outlines/NucleiOutlines_BR00143976_C03_3.tiff")
    )
    ref_c = labels_from_outlines(
        tifffile.imread(REAL / "outlines/CellsOutlines_BR00143976_C03_3.tiff")
    )
    for correction in (1.0, 1.05):
        seg = segment_field(
            image, plate.channels, SegmentationParams(cell_threshold_correction=correction)
        )
        nuclei = match_labels(ref_n, seg.nuclei)
        # CellProfiler kept 31 of the field's cells (it drops some at the edges): score
        # only the predicted cells whose nucleus lies in one of its cells.
        kept = np.unique(seg.cells[(ref_c > 0) & (seg.nuclei > 0)])
        cells = match_labels(ref_c, np.where(np.isin(seg.cells, kept), seg.cells, 0))
        rows.append(
            f"| {correction:g} | {nuclei.f1:.3f} ({nuclei.tp}/{nuclei.n_true} matched, "
            f"{nuclei.n_pred} found) | {nuclei.mean_iou:.3f} | {cells.recall:.3f} "
            f"({cells.tp}/{cells.n_true}) | {cells.f1:.3f} | {cells.mean_iou:.3f} |"
        )
    return rows


def overlay(path: Path) -> None:
    """Real field (AGP red, RNA green, DNA blue) with CellProfiler cells (white) and ours."""
    from skimage.io import imsave
    from skimage.segmentation import find_boundaries

    plate = open_plate(REAL)
    image = plate.read_field(*next(plate.fields()))
    seg = segment_field(image, plate.channels)
    ref_c = labels_from_outlines(
        tifffile.imread(REAL / "outlines/CellsOutlines_BR00143976_C03_3.tiff")
    )

    def unit(plane: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(plane, [1, 99.5])
        return np.clip((plane - lo) / (hi - lo), 0, 1)

    index = {c.name: i for i, c in enumerate(plate.channels)}
    rgb = np.stack([unit(image[index[n]]) for n in ("AGP", "RNA", "DNA")], axis=-1)
    rgb[find_boundaries(ref_c, mode="inner")] = (1, 1, 1)  # CellProfiler cells
    rgb[find_boundaries(seg.cells, mode="inner")] = (1, 0, 1)  # ours: cells magenta
    rgb[find_boundaries(seg.nuclei, mode="inner")] = (1, 0.5, 0)  # ours: nuclei orange
    imsave(path, (rgb * 255).astype(np.uint8), check_contrast=False)


def build_plate(folder: Path, n_fields: int, synthetic: bool, field_dir: Path) -> Path:
    """A temporary Phenix-layout plate of ``n_fields`` 1080 x 1080 fields, one per well."""
    folder.mkdir(parents=True, exist_ok=True)
    wells = PLATE_96.wells()[:n_fields]
    for i, well in enumerate(wells):
        row, col = ord(well[0]) - 64, int(well[1:])
        if synthetic:
            planes = render_field(BIG, seed=i, well=well).image
            for c, plane in enumerate(planes, start=1):
                tifffile.imwrite(folder / f"r{row:02d}c{col:02d}f01p01-ch{c}sk1fk1fl1.tiff", plane)
        else:
            for source in sorted(field_dir.glob("*-ch*sk1fk1fl1.tiff")):
                channel = source.name.split("-")[1]
                shutil.copyfile(source, folder / f"r{row:02d}c{col:02d}f01p01-{channel}")
    return folder


def _best(fn, repeats: int) -> float:
    """Least CPU seconds of ``repeats`` calls (robust to other jobs on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def cpu_per_field(field_dir: Path, repeats: int = 3) -> list[str]:
    """CPU seconds of each stage for one field, now and by the reference path, in this process.

    "Before" is measured in the same run: the measurements through
    :mod:`phenoadapt.cells.reference` (``regionprops_table``, ``np.quantile``,
    ``graycomatrix``, what ``measure_cells`` called until issue 14.3), and the
    segmentation plus the extra time of the steps it replaced
    (``binary_fill_holes``, ``expand_labels``, the per-cell hole pass).
    """
    from phenoadapt.cells import MeasureParams, measure_cells
    from phenoadapt.cells.reference import reference_measurements

    plate = open_plate(field_dir)
    well, site = next(plate.fields())
    image = plate.read_field(well, site)
    seg = segment_field(image, plate.channels)
    read = _best(lambda: plate.read_field(well, site), repeats)
    segment = _best(lambda: segment_field(image, plate.channels), repeats)
    replaced = _replaced_segmentation_steps(image, plate, seg, repeats)
    measure = _best(lambda: measure_cells(image, plate.channels, seg), repeats)
    no_texture = MeasureParams(texture=False)
    plain = _best(lambda: measure_cells(image, plate.channels, seg, no_texture), repeats)
    reference = _best(lambda: reference_measurements(image, plate.channels, seg), 1)
    ref_plain = _best(lambda: reference_measurements(image, plate.channels, seg, no_texture), 1)
    before_seg = segment + replaced
    rows = [
        "| stage | CPU s per field now | before (reference path, same run) | speed-up |",
        "|---|---|---|---|",
        f"| read 6 planes | {read:.3f} | {read:.3f} | |",
        f"| segment | {segment:.3f} | {before_seg:.3f} | {before_seg / segment:.2f}x |",
        f"| measure (shape, intensity, texture) | {measure:.3f} | {reference:.3f} "
        f"| {reference / measure:.1f}x |",
        f"| measure without texture (`--no-texture`) | {plain:.3f} | {ref_plain:.3f} "
        f"| {ref_plain / plain:.1f}x |",
        f"| **total** ({seg.n_cells} cells) | **{read + segment + measure:.3f}** "
        f"| **{read + before_seg + reference:.3f}** | "
        f"{(read + before_seg + reference) / (read + segment + measure):.2f}x |",
        f"| **ideal fields/s on {default_workers()} cores** (cores / total) "
        f"| **{default_workers() / (read + segment + measure):.2f}** "
        f"| {default_workers() / (read + before_seg + reference):.2f} | |",
    ]
    return rows + ["", *_agreement(image, plate, seg)]


def _replaced_segmentation_steps(image, plate, seg, repeats: int) -> float:
    """Extra CPU seconds the segmentation's replaced steps cost, on this field's masks."""
    from scipy import ndimage as ndi
    from skimage.segmentation import expand_labels

    from phenoadapt.cells import classical

    params = SegmentationParams()
    mask = seg.cells > 0  # a field-sized mask like the two that are hole-filled

    def per_cell_holes() -> None:
        for i, sl in enumerate(ndi.find_objects(seg.cells), start=1):
            own = seg.cells[sl] == i
            ndi.binary_fill_holes(own) & (seg.cells[sl] == 0)

    old = 2 * _best(lambda: ndi.binary_fill_holes(mask), repeats)
    old += _best(lambda: expand_labels(seg.nuclei, params.cell_radius), repeats)
    old += _best(per_cell_holes, repeats)
    new = 2 * _best(lambda: classical.fill_holes(mask), repeats)
    new += _best(lambda: ndi.distance_transform_edt(seg.nuclei == 0), repeats)
    new += _best(lambda: classical._fill_cell_holes(seg.cells), repeats)
    return max(old - new, 0.0)


def _agreement(image, plate, seg) -> list[str]:
    """Largest difference of the fast measurements from the reference ones, on the real field."""
    import pandas as pd

    from phenoadapt.cells import measure_cells
    from phenoadapt.cells.reference import reference_measurements

    new = measure_cells(image, plate.channels, seg)
    ref = reference_measurements(image, plate.channels, seg)
    a, b = ref.to_numpy(float), new[ref.columns].to_numpy(float)
    same_nan = bool((np.isnan(a) == np.isnan(b)).all())
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.nan_to_num(np.abs(a - b) / np.maximum(np.abs(a), 1e-300))
    worst = pd.Series(rel.max(axis=0), index=ref.columns)
    exact = int((worst == 0).sum())
    return [
        f"Fast vs reference measurements on this field: {exact} of {len(worst)} columns "
        f"identical, largest relative difference {worst.max():.1e} ({worst.idxmax()}); "
        f"missing values {'in the same places' if same_nan else 'DIFFER'}.",
    ]


def filter_engines(field_dir: Path, repeats: int = 3) -> list[str]:
    """CPU/GPU seconds of the segmentation's filters on scipy and on torch."""
    import torch

    from phenoadapt.cells import filters

    plate = open_plate(field_dir)
    plane = plate.read_field(*next(plate.fields()))[0]
    rows = ["| engine | device | 2 gaussians + sobel, s per field |", "|---|---|---|"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one process per core, as segment_plate runs
    try:
        for engine in filters.FILTER_ENGINES:
            device = "cpu" if engine == "scipy" else filters.torch_device()

            def run(engine: str = engine) -> None:
                for _ in range(2):
                    filters.gaussian(plane, 2.0, engine)
                filters.sobel(plane, engine)

            run()  # warm-up (CUDA context, kernels)
            if device == "cuda":
                wall = _best_wall(run, repeats)
                rows.append(f"| {engine} | {torch.cuda.get_device_name()} | {wall:.4f} (wall) |")
            else:
                rows.append(f"| {engine} | CPU, 1 thread | {_best(run, repeats):.4f} |")
    finally:
        torch.set_num_threads(threads)
    return rows


def _best_wall(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(n_fields: int, synthetic: bool, field_dir: Path) -> list[str]:
    rows = [
        "| fields | processes | seconds | fields/s | cells/s | cells/field | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        plate = open_plate(build_plate(Path(tmp) / "BENCH", n_fields, synthetic, field_dir))
        for workers in sorted({1, default_workers()}):
            start = time.perf_counter()
            result = segment_plate(plate, workers=workers)
            seconds = time.perf_counter() - start
            if result.failures:
                raise SystemExit(f"benchmark fields failed: {result.failures[0]}")
            cells = len(result.cells)
            rows.append(
                f"| {n_fields} | {workers} | {seconds:.1f} | {n_fields / seconds:.2f} | "
                f"{cells / seconds:.0f} | {cells / n_fields:.0f} | {os.getloadavg()[0]:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--field-dir", type=Path, default=REAL, help="folder of one Phenix field")
    parser.add_argument("--synthetic", action="store_true", help="time synthetic 1080x1080 fields")
    parser.add_argument("--fields", type=int, default=16, help="fields in the timed plate")
    parser.add_argument("--seeds", type=int, default=3, help="synthetic fields per MoA")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--speed-only", action="store_true", help="print the speed tables only (no docs)"
    )
    args = parser.parse_args()
    if args.speed_only:
        print("\n".join([*cpu_per_field(args.field_dir), "", *filter_engines(args.field_dir)]))
        print("\n".join(speed(args.fields, args.synthetic, args.field_dir)))
        return

    source = "synthetic 1080x1080 fields" if args.synthetic else f"copies of {args.field_dir.name}"
    lines = [
        f"Measured with `python benchmarks/bench_segmentation.py` on {platform.machine()} "
        f"with {default_workers()} cores, Python {platform.python_version()}.",
        "",
        "**Synthetic fields vs ground truth** (256x256 fields, nucleus diameter 16 px, "
        "default parameters otherwise):",
        "",
        *synthetic_quality(args.seeds),
        "",
        "**Real Phenix field vs CellProfiler** (BR00143976 C03 site 3, default parameters; "
        "1.05 shows the sensitivity to the cell threshold):",
        "",
        *real_quality(),
        "",
        f"**Speed**: segmentation + all measurements (texture included) of {source} "
        "(6 planes read per field, 5 fluorescent channels measured):",
        "",
        *speed(args.fields, args.synthetic, args.field_dir),
        "",
        "CPU time per field of the real field, by stage (independent of other jobs on the "
        "machine; one process per core ideally gives cores / total fields per second). "
        "*Before* is the reference path measured in the same run: measurements through "
        "`regionprops_table` / `np.quantile` / `graycomatrix` (`phenoadapt.cells.reference`), "
        "segmentation with `binary_fill_holes`, `expand_labels` and the per-cell hole pass:",
        "",
        *cpu_per_field(args.field_dir),
        "",
        "Filters of the segmentation (`SegmentationParams(filters=...)`) on one 1080 x 1080 "
        "plane; `torch` runs on the GPU when torch sees one and falls back to scipy otherwise:",
        "",
        *filter_engines(args.field_dir),
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_doc_section(DOC, text, START, END)
        overlay(OVERLAY)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
