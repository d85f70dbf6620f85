"""Illumination correction: recovery of a known shading, agreement with CellProfiler, time.

Written into docs/segmentation.md ("Illumination correction").

Recovery
    Synthetic 256 px plates, sparse and confluent, of 12-24 fields (the
    generator's own vignetting switched off) whose
    planes are multiplied by a known off-centre shading (to 45%, plus a tilt):
    correlation of each channel's function with the shading, for each way of
    averaging the fields, and the spread of the DNA intensity over a 4 x 4 grid
    of field positions before and after correction.

Real field vs CellProfiler
    The shipped Opera Phenix field (BR00143976 C03 site 3) is a plate of one
    field, and one field cannot give an illumination function: whatever is
    computed from it shows where its cells lie (``phenoadapt segment
    --illumination-correction`` refuses plates of fewer than 10 fields).  Four
    rows are measured against CellProfiler's outlines:

    1. the field as it is;
    2. the field divided by its own function (the plate method forced onto its
       single field, as CellProfiler's "Each" mode would do): the degenerate case
       the refusal avoids;
    3. the field multiplied by a known vignetting (corners at 60%), uncorrected;
    4. that shaded field divided by the function computed by
       :func:`compute_illumination` from 16 other fields (a confluent synthetic
       1080 px plate shaded by the same vignetting), as a real plate's own fields
       would give it, once per way of averaging the fields.

Time
    Computing a plate's functions (reads dominate), loading them from the cache,
    and applying them to one 1080 x 1080 field.

Usage::

    python benchmarks/bench_illumination.py            # prints and updates docs/segmentation.md
    python benchmarks/bench_illumination.py --no-write
"""

from __future__ import annotations

import argparse
import platform
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
)
from phenoadapt.cells.illumination import (
    MIN_FIELDS,
    STATISTICS,
    apply_illumination,
    block_mean,
    compute_illumination,
)
from phenoadapt.cells.process import default_workers
from phenoadapt.plate import open_plate
from phenoadapt.plate.channels import ChannelRole
from phenoadapt.plate.synthetic import EffectStrengths, SyntheticPlateConfig, generate_plate
from phenoadapt.plate.wells import PLATE_96

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "phenix_BR00143976"
DOC = ROOT / "docs" / "segmentation.md"
START, END = "<!-- illumination:start -->", "<!-- illumination:end -->"
NO_SHADING = EffectStrengths(lab_vignetting=0.0, lab_tilt=0.0)


def known_shading(shape: tuple[int, int]) -> np.ndarray:
    """Off-centre fall-off to 45% and a 20% tilt (the shading of the recovery test)."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    y, x = y / (shape[0] - 1), x / (shape[1] - 1)
    radial = 1.0 - 0.5 * ((x - 0.65) ** 2 + (y - 0.4) ** 2) / 0.6
    return (radial * (1.0 - 0.2 * y)).astype(np.float32)


def vignetting(shape: tuple[int, int], corner: float = 0.6) -> np.ndarray:
    """Radial quadratic vignetting: 1 in the centre, ``corner`` in the corners."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    r2 = ((y / (shape[0] - 1) - 0.5) ** 2 + (x / (shape[1] - 1) - 0.5) ** 2) / 0.5
    return (1.0 - (1.0 - corner) * r2).astype(np.float32)


def shaded_plate(folder: Path, config: SyntheticPlateConfig, shading, seed: int) -> Path:
    """A synthetic plate whose every plane is multiplied by ``shading(shape)``."""
    plate = generate_plate(folder, config, seed=seed, plate_id=folder.name, workers=None)
    for path in sorted(plate.path.glob("*.tiff")):
        plane = tifffile.imread(path)
        tifffile.imwrite(path, np.rint(plane * shading(plane.shape)).astype(np.uint16))
    return plate.path


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _spread(planes: list[np.ndarray]) -> float:
    means = np.mean([block_mean(p, (4, 4)) for p in planes], axis=0)
    return float(means.std() / means.mean())


#: Recovery cases: (wells of 2 fields, cell density per px^2, cell radius px, label).
CASES = ((6, 6e-4, 20.0, "sparse"), (12, 6e-4, 20.0, "sparse"), (8, 2e-3, 24.0, "confluent"),
         (12, 2e-3, 24.0, "confluent"))  # fmt: skip


def recovery(tmp: Path, cases=CASES) -> list[str]:
    """Correlation with the known shading per statistic, and DNA spread before/after."""
    rows = [
        "| fields | cells | average over fields "
        "| correlation with the shading (DNA, ER, RNA, AGP, Mito) "
        "| DNA spread over positions: raw -> corrected |",
        "|---|---|---|---|---|",
    ]
    for n_wells, density, radius, label in cases:
        wells = tuple(PLATE_96.wells()[:n_wells])
        config = SyntheticPlateConfig(
            sites=2, wells=wells, strengths=NO_SHADING, cell_density=density, cell_radius=radius
        )
        folder = shaded_plate(tmp / f"REC{n_wells}{label}", config, known_shading, seed=5)
        plate = open_plate(folder)
        truth = known_shading(plate.field_shape)
        dna = plate.channel("DNA")
        raw = [plate.read_plane(w, s, dna).astype(np.float32) for w, s in plate.fields()]
        for statistic in STATISTICS:
            result = compute_illumination(plate, statistic=statistic, use_cache=False)
            corr = ", ".join(f"{_corr(result.function(c), truth):.3f}" for c in plate.channels)
            corrected = [apply_illumination(p, result.function(dna)) for p in raw]
            rows.append(
                f"| {plate.n_fields} | {label} | {statistic} | {corr} | "
                f"{_spread(raw):.3f} -> {_spread(corrected):.3f} |"
            )
            print(rows[-1], flush=True)
    return rows


def _references() -> tuple[np.ndarray, np.ndarray]:
    nuclei = tifffile.imread(REAL / "outlines/NucleiOutlines_BR00143976_C03_3.tiff")
    cells = tifffile.imread(REAL / "outlines/CellsOutlines_BR00143976_C03_3.tiff")
    return labels_from_outlines(nuclei), labels_from_outlines(cells)


def _agreement(image: np.ndarray, channels, refs) -> str:
    """Nuclei F1 (matched/true, found) and cells F1 on CellProfiler's kept cells."""
    ref_n, ref_c = refs
    seg = segment_field(image, channels, SegmentationParams())
    nuclei = match_labels(ref_n, seg.nuclei)
    kept = np.unique(seg.cells[(ref_c > 0) & (seg.nuclei > 0)])
    cells = match_labels(ref_c, np.where(np.isin(seg.cells, kept), seg.cells, 0))
    return (
        f"{nuclei.f1:.3f} ({nuclei.tp}/{nuclei.n_true}, {nuclei.n_pred} found) | "
        f"{nuclei.mean_iou:.3f} | {cells.f1:.3f} | {cells.mean_iou:.3f}"
    )


def _range(functions, channels) -> str:
    dna = next(i for i, c in enumerate(channels) if c.role is ChannelRole.DNA)
    f = functions[dna]
    return "1 (none)" if f is None else f"{f.min():.2f}-{f.max():.2f}"


def real_field(tmp: Path, n_fields: int) -> tuple[list[str], list[str]]:
    """Agreement rows on the real field, and timing rows of the 1080 px plate."""
    plate = open_plate(REAL)
    channels = plate.channels
    image = plate.read_field(*next(plate.fields()))
    refs = _references()
    own = compute_illumination(plate, min_fields=1, use_cache=False)
    own_f = own.functions_for(channels)
    fluorescent = [c.role is not ChannelRole.BRIGHTFIELD for c in channels]
    shade = vignetting(plate.field_shape)
    pairs = zip(image, fluorescent, strict=True)
    shaded = np.stack([np.rint(p * shade).astype(p.dtype) if f else p for p, f in pairs])
    # A 1080 px plate of the same "microscope" (the same vignetting), 20x-like cells.
    config = SyntheticPlateConfig(
        field_shape=plate.field_shape,
        nucleus_radius=20,
        cell_radius=50,
        cell_density=1e-4,
        sites=2,
        wells=tuple(PLATE_96.wells()[: (n_fields + 1) // 2]),
        strengths=NO_SHADING,
    )
    folder = shaded_plate(tmp / "SCOPE", config, vignetting, seed=7)
    scope_plate = open_plate(folder)
    start = time.perf_counter()
    scope = compute_illumination(scope_plate)
    compute_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded = compute_illumination(open_plate(folder))
    load_s = time.perf_counter() - start
    assert loaded.loaded
    by_role = {c.role: c for c in scope_plate.channels}
    scope_f = [
        scope.function(by_role[c.role]) if c.role in by_role and f else None
        for c, f in zip(channels, fluorescent, strict=True)
    ]
    start = time.perf_counter()
    corrected = apply_illumination(shaded, scope_f)
    apply_s = time.perf_counter() - start
    dna_corr = _corr(scope_f[[c.role for c in channels].index(ChannelRole.DNA)], shade)
    rows = [
        "| field | DNA function range | nuclei F1 (matched/true, found) | nuclei mean IoU "
        "| cells F1 | cells mean IoU |",
        "|---|---|---|---|---|---|",
        f"| 1. as recorded | 1 (none) | {_agreement(image, channels, refs)} |",
        f"| 2. divided by its own one-field function | {_range(own_f, channels)} "
        f"| {_agreement(apply_illumination(image, own_f), channels, refs)} |",
        f"| 3. x vignetting (corners 60%), uncorrected | 1 (none) "
        f"| {_agreement(shaded, channels, refs)} |",
        f"| 4. 3. divided by the function of {scope.n_fields} other fields (quartile) "
        f"| {_range(scope_f, channels)} | {_agreement(corrected, channels, refs)} |",
    ]
    for statistic in ("minimum", "mean"):
        other = compute_illumination(scope_plate, statistic=statistic, use_cache=False)
        other_f = [
            other.function(by_role[c.role]) if c.role in by_role and f else None
            for c, f in zip(channels, fluorescent, strict=True)
        ]
        rows.append(
            f"| 4. 3. divided by the function of {other.n_fields} other fields ({statistic}) "
            f"| {_range(other_f, channels)} "
            f"| {_agreement(apply_illumination(shaded, other_f), channels, refs)} |"
        )
    timing = [
        "| step | seconds |",
        "|---|---|",
        f"| compute the functions of {scope.n_fields} fields x {len(scope.channels)} channels, "
        f"1080 x 1080 (read + reduce + filter) | {compute_s:.2f} "
        f"({compute_s / scope.n_fields:.3f} per field) |",
        f"| load them from the cache ({loaded.path.stat().st_size / 1024:.0f} KiB .npz) "
        f"| {load_s:.3f} |",
        f"| upsample and apply them to one field (6 channels) | {apply_s:.3f} |",
    ]
    print("\n".join(rows + timing), flush=True)
    print(f"correlation of the 16-field DNA function with the vignetting: {dna_corr:.3f}")
    return rows + [
        "",
        f"Correlation of row 4's DNA function with the vignetting: {dna_corr:.3f}.",
    ], timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fields", type=int, default=16, help="fields of the 1080 px plate")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recovered = recovery(Path(tmp))
        agreement, timing = real_field(Path(tmp), args.fields)
    lines = [
        f"Measured with `python benchmarks/bench_illumination.py` on {platform.machine()} "
        f"with {default_workers()} cores, Python {platform.python_version()}.",
        "",
        "**Recovery of a known shading** (synthetic 256 px plates, the generator's own "
        "vignetting off, every plane multiplied by an off-centre fall-off to 45% with a tilt; "
        "spread = coefficient of variation of the mean DNA intensity over a 4 x 4 grid of "
        "field positions, averaged over the plate's fields):",
        "",
        *recovered,
        "",
        "**Real Phenix field vs CellProfiler** (BR00143976 C03 site 3, default segmentation "
        f"parameters). The folder is a plate of one field, which `--illumination-correction` "
        f"refuses (fewer than {MIN_FIELDS} fields); row 2 forces the computation on it to show "
        "why. Rows 3-4 shade the real field with a known vignetting and correct it with the "
        f"function `compute_illumination` finds on {args.fields} other fields (a synthetic "
        "1080 px plate under the same vignetting), which is what a real plate's own fields give:",
        "",
        *agreement,
        "",
        "**Time** (one process):",
        "",
        *timing,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_doc_section(DOC, text, START, END)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
