"""How fluid the UMAP dock is with many cells: drawing, recolouring, selecting, fitting.

A stand-in run result with ``--cells`` cells (plates x treatments x wells, a plate
offset in the unadapted features only) is put in a napari viewer's session.
Drawing and selection are timed on maps whose 2-D coordinates come from a PCA
of the features (fast to make; the dock draws and selects any coordinates the
same way), with and without the density + subsample path.  The UMAP fit itself
(phenoadapt.evaluate.umap_coordinates, one feature space) is timed separately
on ``--fit-cells`` cells, and the batch-mixing scores the dock shows on their
2,000-cell sample.

Run under a display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_umap_dock.py [--quick]

Figures are printed and written into the ``bench:umap-dock`` section of
``docs/umap-dock.md`` (with :func:`_common.write_doc_section`: the title and
any notes around the section are hand-written and kept), or of the page
``--out`` names (created when missing); ``--quick`` (5,000 cells, one repeat)
writes only with ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenoadapt import schema

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

DOC = Path(__file__).parents[1] / "docs" / "umap-dock.md"
START, END = "<!-- bench:umap-dock:start -->", "<!-- bench:umap-dock:end -->"
TITLE = "UMAP dock: speed with many cells"
MOAS = ["control", "tubulin", "Eg5 inhibitor", "proteasome", "actin", "DNA damage"]


@dataclass
class StandInResult:
    """The attributes of a pipeline RunResult that the UMAP dock reads."""

    cells: pd.DataFrame
    wells: pd.DataFrame | None
    embeddings: np.ndarray
    embeddings_unadapted: np.ndarray
    methods: dict[str, str] = field(default_factory=dict)


def stand_in_result(n_cells: int, n_plates: int = 4, dim: int = 64, seed: int = 0):
    """Cells spread over plates and 96 wells each; MoA centres plus a plate offset (before)."""
    rng = np.random.default_rng(seed)
    plate = rng.integers(n_plates, size=n_cells)
    well = rng.integers(96, size=n_cells)
    moa = well % len(MOAS)  # a fixed layout: the same MoA in the same wells of every plate
    centres = rng.normal(scale=3, size=(len(MOAS), dim))
    offsets = rng.normal(scale=3, size=(n_plates, dim))
    after = (centres[moa] + rng.normal(size=(n_cells, dim))).astype(np.float32)
    before = after + offsets[plate].astype(np.float32)
    names = np.array([f"{'ABCDEFGH'[w // 12]}{w % 12 + 1:02d}" for w in range(96)])
    moas = np.array(MOAS)
    cells = pd.DataFrame(
        {
            schema.PLATE: np.char.add("P", plate.astype(str)),
            schema.WELL: names[well],
            schema.SITE: rng.integers(1, 10, size=n_cells),
            schema.ROLE: np.where(moa == 0, "control", "treated"),
            schema.TREATMENT: np.char.add("compound ", (well % 24).astype(str)),
            schema.MOA: moas[moa],
            schema.CELL_ID: np.arange(1, n_cells + 1),
            # 80% right, the rest a random MoA.
            schema.PREDICTION: moas[
                np.where(rng.random(n_cells) < 0.8, moa, rng.integers(len(MOAS), size=n_cells))
            ],
        }
    )
    methods = {f"P{i}": "cs-arm-bn" for i in range(n_plates)}
    return StandInResult(cells, None, after, before, methods)


def timed(action, canvas) -> float:
    """Seconds for an action plus the full redraw it causes (drawn now, not when idle)."""
    start = time.perf_counter()
    action()
    canvas.draw()
    return time.perf_counter() - start


def best_of(repeats: int, action, canvas) -> float:
    return min(timed(action, canvas) for _ in range(repeats))


def dock_timings(result, max_points: int, repeats: int) -> dict[str, float]:
    """Draw, recolour and select timings of a dock drawing at most ``max_points`` dots."""
    import napari
    from sklearn.decomposition import PCA

    from phenoadapt.gui.session import get_session
    from phenoadapt.gui.umap_dock import UmapMaps, UmapWidget, point_table

    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(1500, 950)
    session = get_session(viewer)
    dock = UmapWidget(viewer, max_points=max_points)
    viewer.window.add_dock_widget(dock, name="UMAP")
    with session.result_changed.blocked():  # stored without telling the docks: no UMAP fit
        session.set_result(result)
    points, point_of_cell, features = point_table(result, "cell")
    coordinates = {k: PCA(2, random_state=0).fit_transform(v) for k, v in features.items()}
    mixing = {k: "not computed in this benchmark" for k in features}
    dock.maps = UmapMaps("cell", points, point_of_cell, coordinates, mixing, 15, 0)
    figures = {"draw": best_of(repeats, dock.redraw, dock.canvas)}
    colours = ["Treatment", "MoA"] * repeats
    figures["recolour"] = best_of(
        repeats, lambda: dock.colour.setCurrentText(colours.pop()), dock.canvas
    )
    xy = coordinates["after"]
    lo, hi = np.percentile(xy, [5, 60], axis=0)
    polygon = [(lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])]
    figures["lasso"] = best_of(repeats, lambda: dock.canvas.select_polygon(1, polygon), dock.canvas)
    figures["lasso_cells"] = float(len(session.selected_rows))
    rows = np.random.default_rng(0).choice(len(result.cells), 1000, replace=False)
    figures["selected_elsewhere"] = best_of(
        repeats, lambda: session.select_cells(rows), dock.canvas
    )
    figures["shown"] = float(dock.shown_points)
    figures["note"] = dock.note.text()
    viewer.close()
    return figures


def fit_timings(result, n_fit: int) -> dict[str, float]:
    """UMAP fit of one feature space on ``n_fit`` cells, and the dock's mixing scores."""
    from phenoadapt.evaluate import umap_coordinates
    from phenoadapt.gui.umap_dock import plate_mixing, point_table

    points, _, features = point_table(result, "cell")
    rows = np.random.default_rng(0).choice(len(points), n_fit, replace=False)
    umap_coordinates(features["after"][:200], seed=0)  # numba compilation, not counted
    start = time.perf_counter()
    umap_coordinates(features["after"][rows], seed=0)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    before = plate_mixing(points, features["before"], seed=0)
    after = plate_mixing(points, features["after"], seed=0)
    return {
        "fit": fit,
        "mixing": (time.perf_counter() - start) / 2,
        "knn_before": before.knn_accuracy,
        "knn_after": after.knn_accuracy,
        "lisi_before": before.lisi,
        "lisi_after": after.lisi,
        "chance": after.chance,
    }


def render(
    n_cells: int,
    fit_cells: int,
    repeats: int,
    dense: dict[str, Any],
    every: dict[str, Any],
    fit: dict[str, float],
) -> str:
    """The ``bench:umap-dock`` section from :func:`dock_timings` and :func:`fit_timings`."""
    from phenoadapt.gui.umap_dock import MAX_CELLS

    n = f"{n_cells:,}"
    lines = [
        "Measured by `benchmarks/bench_umap_dock.py` on "
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPU cores, shared with "
        f"other jobs: load average {os.getloadavg()[0]:.0f} at the end, so an idle machine is "
        "faster), matplotlib qtagg canvas, best of "
        f"{repeats}. Stand-in result: {n} cells on 4 plates of 96 wells, 64-dimensional "
        "features. Each time includes the full redraw of both maps (before and after).",
        "",
        f"| action ({n} cells, both maps) | density + 20,000 dots | all {n} dots |",
        "|---|---:|---:|",
        f"| draw the maps | {dense['draw']:.2f} s | {every['draw']:.2f} s |",
        f"| change the colouring | {dense['recolour']:.2f} s | {every['recolour']:.2f} s |",
        f"| lasso selection ({int(dense['lasso_cells']):,} cells) -> session -> outline "
        f"| {dense['lasso']:.2f} s | {every['lasso']:.2f} s |",
        f"| 1,000 cells selected elsewhere -> outline | {dense['selected_elsewhere']:.2f} s "
        f"| {every['selected_elsewhere']:.2f} s |",
        "",
        f"With the density path the dock says: *{dense['note']}*"
        if dense["note"]
        else f"All {n} cells fit under 20,000 dots: the density path is not taken.",
        "",
        "A lasso takes every cell inside the outline in both cases "
        f"({int(dense['lasso_cells']):,} = {int(every['lasso_cells']):,}).",
        "",
        "## Fitting",
        "",
        f"- UMAP fit of one feature space (umap-learn, 15 neighbours, seed 0; "
        f"layout on one thread, exact neighbours on every core) on {fit_cells:,} cells: "
        f"{fit['fit']:.1f} s, after a 200-cell warm-up fit (which loads numba's compiled code; "
        "docs/umap-speed.md has the times by cell count and of a session's first fit). The dock "
        "fits both spaces, before and after, one after the other in a worker thread, so napari "
        "stays responsive. 'Map at most' caps a cell map (default "
        f"{MAX_CELLS:,} cells; above it a sample stratified by well is mapped).",
        f"- Batch-mixing scores of one space (kNN plate accuracy, silhouette, LISI on a "
        f"2,000-cell sample of treated cells, stratified by plate): {fit['mixing']:.1f} s. "
        f"On this stand-in: kNN plate accuracy {fit['knn_before']:.2f} before, "
        f"{fit['knn_after']:.2f} after (chance {fit['chance']:.2f}); LISI "
        f"{fit['lisi_before']:.2f} before, {fit['lisi_after']:.2f} after (of 4 plates).",
    ]
    return "\n".join(lines)


def write_section(page: Path, text: str) -> Path:
    """Put ``text`` (:func:`render`) into the page's ``bench:umap-dock`` section."""
    return write_doc_section(page, text, START, END, title=TITLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--fit-cells", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="5,000 cells, 1,000 fitted, one repeat"
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"page whose section is written (default: {DOC.name}; with --quick: none)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.cells, args.fit_cells, args.repeats = 5_000, 1_000, 1
    page = args.out or (None if args.quick else DOC)  # quick figures never replace the docs'

    result = stand_in_result(args.cells)
    dense = dock_timings(result, 20_000, args.repeats)
    every = dock_timings(result, args.cells, args.repeats)
    fit = fit_timings(result, args.fit_cells)
    text = render(args.cells, args.fit_cells, args.repeats, dense, every, fit)
    print(text)
    if page is not None:
        print(f"wrote {write_section(page, text)}")


if __name__ == "__main__":
    main()
