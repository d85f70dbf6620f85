"""Benchmarks that own a section of a docs page keep the hand-written prose around it.

bench_abra, bench_adaptation, bench_umap_dock and bench_site_unit used to overwrite
their whole page (and so the notes written under the figures); they now write
between their markers with ``_common.write_doc_section``.  Each test copies the
real page, writes a section into the copy and checks that everything outside the
markers is byte for byte what it was.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_abra  # noqa: E402
import bench_adaptation  # noqa: E402
import bench_site_unit  # noqa: E402
import bench_umap_dock  # noqa: E402

# (module, its writer, its markers, the page, a hand-written sentence outside the markers)
SECTIONS = {
    "abra": (
        bench_abra.write_report, bench_abra.START, bench_abra.END, bench_abra.OUT,
        "Runs were made in parallel processes",
    ),
    "adaptation": (
        bench_adaptation.write_section, bench_adaptation.START, bench_adaptation.END,
        bench_adaptation.OUT, "# Plate-context adaptation: benchmark on toy crops",
    ),
    "umap-dock": (
        bench_umap_dock.write_section, bench_umap_dock.START, bench_umap_dock.END,
        bench_umap_dock.DOC, "# UMAP dock: speed with many cells",
    ),
    "site-unit": (
        bench_site_unit.write_section, bench_site_unit.SITE_START, bench_site_unit.SITE_END,
        bench_site_unit.ROOT_DOC, "Reading: a small network",
    ),
}  # fmt: skip


def _outside(text: str, start: str, end: str) -> tuple[str, str]:
    head, rest = text.split(start, 1)
    return head, rest.split(end, 1)[1]


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_a_write_keeps_the_prose_outside_the_markers(name: str, tmp_path: Path) -> None:
    write, start, end, doc, prose = SECTIONS[name]
    page = tmp_path / doc.name
    shutil.copy(doc, page)
    before = page.read_text(encoding="utf-8")
    assert before.count(start) == 1 and before.count(end) == 1, "the page lost its markers"
    assert prose in "".join(_outside(before, start, end))
    write(page, "NEW FIGURES\n| a | b |")
    after = page.read_text(encoding="utf-8")
    head, tail = _outside(before, start, end)
    assert after == f"{head}{start}\nNEW FIGURES\n| a | b |\n{end}{tail}"
    write(page, "AGAIN")  # a second run replaces the first one's section only
    assert page.read_text(encoding="utf-8") == f"{head}{start}\nAGAIN\n{end}{tail}"


def test_site_unit_keeps_the_labs_section(tmp_path: Path) -> None:
    """The default run and ``--labs`` write two sections of one page, neither erasing the other."""
    page = tmp_path / "site.md"
    shutil.copy(bench_site_unit.ROOT_DOC, page)
    labs = _outside(page.read_text(encoding="utf-8"), bench_site_unit.SITE_START,
                    bench_site_unit.SITE_END)[1]  # fmt: skip
    bench_site_unit.write_section(page, "SITE FIGURES")
    assert labs in page.read_text(encoding="utf-8") and bench_site_unit.LABS_START in labs


def test_a_missing_page_is_created_with_the_title(tmp_path: Path) -> None:
    page = bench_umap_dock.write_section(tmp_path / "new.md", "figures")
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# {bench_umap_dock.TITLE}\n") and "figures" in text


def test_abra_rows_round_trip_through_a_section(tmp_path: Path) -> None:
    """``--combine`` reads the per-seed rows back from pages with the section markers."""
    committed = bench_abra.read_rows(bench_abra.OUT)
    assert len(committed) == 11 and set(committed["model"]) == {"erm", "margin", "abra",
                                                                  "cs-arm-bn"}  # fmt: skip
    from phenoadapt.train import CellData, make_toy_plates

    images, table = make_toy_plates(["P1", "P2"], treated_per_class=2, n_controls=2, seed=0)
    data = CellData.from_table(images, table)
    results = committed[committed["seed"] == 0].reset_index(drop=True)
    page = bench_abra.write_report(tmp_path / "s0.md", bench_abra.report_text(data, results, 3, 20))
    again = bench_abra.read_rows(page)
    pd.testing.assert_frame_equal(again, results, check_exact=False, atol=5e-4)


def test_adaptation_and_umap_dock_sections_render() -> None:
    adaptation = bench_adaptation.render(["| s |"], ["| a |"], ["| l |"], n_seeds=1)
    assert "(1 seeds, mean +- std)" in adaptation and "| l |" in adaptation
    assert not adaptation.startswith("#")  # the title is the page's, outside the markers
    timings = {"draw": 0.1, "recolour": 0.2, "lasso": 0.3, "lasso_cells": 12.0,
               "selected_elsewhere": 0.4, "note": "Showing all"}  # fmt: skip
    fit = dict.fromkeys(
        ("fit", "mixing", "knn_before", "knn_after", "lisi_before", "lisi_after", "chance"), 0.5
    )
    text = bench_umap_dock.render(5_000, 1_000, 1, timings, timings, fit)
    assert "| draw the maps | 0.10 s | 0.10 s |" in text and "on 1,000 cells" in text
    assert not text.startswith("#") and "the dock says: *Showing all*" in text
    quiet = bench_umap_dock.render(5_000, 1_000, 1, {**timings, "note": ""}, timings, fit)
    assert "density path is not taken" in quiet
