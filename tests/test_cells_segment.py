"""Segmentation of nuclei and cells: quality on synthetic and real fields, bad input, cellpose."""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phenoadapt.cells import (
    SegmentationParams,
    labels_from_outlines,
    match_labels,
    segment_field,
)
from phenoadapt.cells.cellpose_backend import pair_cells_with_nuclei
from phenoadapt.errors import CellsError
from phenoadapt.plate.channels import make_channels
from phenoadapt.plate.synthetic import render_field

CP5 = make_channels(["1", "2", "3", "4", "5"], ["DNA", "ER", "RNA", "AGP", "Mito"])
REAL = Path(__file__).parent / "data" / "phenix_BR00143976"
SYNTH = SegmentationParams(nucleus_diameter=16)  # synthetic nuclei have radius 8


def _real_field() -> tuple[np.ndarray, list]:
    image = np.stack(
        [tifffile.imread(REAL / f"r03c03f03p01-ch{i}sk1fk1fl1.tiff") for i in range(1, 7)]
    )
    return image, make_channels([str(i) for i in range(1, 7)])


def _check_consistent(seg) -> None:
    """Cell i contains nucleus i, labels are 1..n in both images."""
    n = seg.n_cells
    assert set(np.unique(seg.cells)) == set(range(n + 1))
    assert set(np.unique(seg.nuclei)) == set(range(n + 1))
    inside = seg.nuclei > 0
    assert np.array_equal(seg.cells[inside], seg.nuclei[inside])


@pytest.mark.parametrize("moa", ["DMSO", "actin_disruptor", "mitochondrial_uncoupler"])
def test_synthetic_fields_match_ground_truth(moa):
    field = render_field(moa=moa, seed=3)
    seg = segment_field(field.image, CP5, SYNTH, field_name="synthetic")
    _check_consistent(seg)
    nuclei = match_labels(field.nuclei.astype(np.int32), seg.nuclei)
    cells = match_labels(field.cells.astype(np.int32), seg.cells)
    assert nuclei.f1 > 0.9, nuclei
    assert cells.f1 > 0.8, cells
    n_true = int(field.cells.max())
    assert abs(seg.n_cells - n_true) <= 0.15 * n_true


def test_real_field_agrees_with_cellprofiler():
    image, channels = _real_field()
    seg = segment_field(image, channels, field_name="BR00143976 C03 s3")
    _check_consistent(seg)
    ref_nuclei = labels_from_outlines(
        tifffile.imread(REAL / "outlines/NucleiOutlines_BR00143976_C03_3.tiff")
    )
    ref_cells = labels_from_outlines(
        tifffile.imread(REAL / "outlines/CellsOutlines_BR00143976_C03_3.tiff")
    )
    assert ref_nuclei.max() == 37 and ref_cells.max() == 31
    nuclei = match_labels(ref_nuclei, seg.nuclei)
    assert nuclei.f1 > 0.9 and nuclei.mean_iou > 0.85, nuclei
    cells = match_labels(ref_cells, seg.cells)
    assert cells.recall > 0.8 and cells.mean_iou > 0.8, cells


def test_touching_nuclei_are_split():
    yy, xx = np.mgrid[:128, :128]
    dna = np.full((128, 128), 100.0)
    for cy, cx in ((64, 50), (64, 76)):  # two discs of radius 14 overlapping by 2 pixels
        dna[(yy - cy) ** 2 + (xx - cx) ** 2 <= 14**2] = 2000
    rng = np.random.default_rng(0)
    image = np.stack([dna, dna * 0.3, dna * 0.3, dna * 0.5 + 300, dna * 0.3]) + rng.normal(
        0, 5, (5, 128, 128)
    )
    seg = segment_field(
        np.clip(image, 0, None).astype(np.uint16), CP5, SegmentationParams(nucleus_diameter=28)
    )
    assert seg.n_cells == 2
    _check_consistent(seg)


def test_exclude_border_drops_edge_cells():
    field = render_field(seed=4)
    everything = segment_field(field.image, CP5, SYNTH)
    inner = segment_field(
        field.image, CP5, SegmentationParams(nucleus_diameter=16, exclude_border=True)
    )
    _check_consistent(inner)
    assert 0 < inner.n_cells < everything.n_cells
    edge = np.concatenate([inner.cells[0], inner.cells[-1], inner.cells[:, 0], inner.cells[:, -1]])
    assert not edge.any()


# -- bad input ------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_image() -> np.ndarray:
    return render_field(seed=5).image


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda im: im[0].fill(0), "channel DNA is all zero"),
        (lambda im: im[3].fill(1234), "channel AGP is constant"),
        (lambda im: im[4].__setitem__(slice(0, 128), 65535), "channel Mito is saturated"),
    ],
)
def test_bad_channels_are_refused_naming_the_field(synthetic_image, change, message):
    image = synthetic_image.copy()
    change(image)
    with pytest.raises(CellsError, match=message) as info:
        segment_field(image, CP5, SYNTH, field_name="plate P1, well B02, site 3")
    assert "plate P1, well B02, site 3" in str(info.value)


def test_empty_field_is_refused():
    rng = np.random.default_rng(1)
    noise = rng.normal(500, 20, (5, 256, 256)).clip(0).astype(np.uint16)
    with pytest.raises(CellsError, match="empty"):
        segment_field(noise, CP5, SYNTH, field_name="well A01, site 1")


def test_missing_channel_is_named(synthetic_image):
    channels = make_channels(["1", "2", "3", "4", "5"], ["DNA", "ER", "RNA", "Actin2", "Mito"])
    channels[3] = channels[3].__class__(key="4", name="Tubulin")  # no AGP role
    # Without AGP the cells are outlined with the next cell-outline stain (RNA) ...
    assert segment_field(synthetic_image, channels, SYNTH, field_name="well A01").n_cells > 10
    # ... but a channel named explicitly must exist.
    with pytest.raises(CellsError, match="no Phalloidin channel.*Tubulin"):
        segment_field(
            synthetic_image, channels, replace(SYNTH, cytoplasm_channel="Phalloidin"), "well A01"
        )
    no_dna = [c.__class__(key=c.key, name=f"x{i}") for i, c in enumerate(channels)]
    with pytest.raises(CellsError, match="no DNA channel.*x0"):
        segment_field(synthetic_image, no_dna, SYNTH, field_name="well A01")
    seg = segment_field(
        synthetic_image,
        channels,
        SegmentationParams(nucleus_diameter=16, cytoplasm_channel="Tubulin"),
    )
    assert seg.n_cells > 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nucleus_diameter": -5}, "nucleus_diameter=-5 must be a positive"),
        ({"nucleus_diameter": float("nan")}, "nucleus_diameter"),
        ({"nucleus_diameter": 2}, "too small"),
        ({"threshold_method": "magic"}, "Unknown threshold_method 'magic'"),
        ({"threshold_correction": 0}, "threshold_correction"),
        ({"min_nucleus_diameter": 50, "max_nucleus_diameter": 20}, "must be smaller"),
        ({"max_saturated_fraction": 2}, "max_saturated_fraction"),
        ({"backend": "stardist"}, "Unknown segmentation backend"),
    ],
)
def test_absurd_parameters_are_refused(kwargs, message):
    with pytest.raises(CellsError, match=message):
        SegmentationParams(**kwargs)


def test_field_smaller_than_two_nuclei_is_refused(synthetic_image):
    with pytest.raises(CellsError, match="too small for nuclei"):
        segment_field(synthetic_image, CP5, SegmentationParams(nucleus_diameter=200), "well A01")


# -- cellpose -------------------------------------------------------------------
def test_cellpose_not_installed_says_how_to_install(synthetic_image, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cellpose", None)  # makes `import cellpose` fail
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    params = SegmentationParams(nucleus_diameter=16, backend="cellpose")
    with pytest.raises(CellsError) as info:
        segment_field(synthetic_image, CP5, params)
    message = str(info.value)
    assert "pip install cellpose" in message
    assert str(tmp_path) in message and "never downloads" in message


def _fake_cellpose(monkeypatch, masks_from):
    """Install a stand-in ``cellpose`` package whose model returns ``masks_from(image)``."""
    calls = {}

    class CellposeModel:
        def __init__(self, gpu=False, pretrained_model=None):
            calls["weights"] = pretrained_model

        def eval(self, image, **kwargs):
            calls["kwargs"] = kwargs
            return masks_from(image), None, None

    package = types.ModuleType("cellpose")
    package.models = types.SimpleNamespace(CellposeModel=CellposeModel)
    monkeypatch.setitem(sys.modules, "cellpose", package)
    monkeypatch.setitem(sys.modules, "cellpose.models", package.models)
    return calls


def test_cellpose_without_weights_names_the_folder(synthetic_image, monkeypatch, tmp_path):
    _fake_cellpose(monkeypatch, lambda image: np.zeros(image.shape[:2], int))
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    with pytest.raises(CellsError, match="weights 'cpsam' were not found") as info:
        segment_field(
            synthetic_image, CP5, SegmentationParams(nucleus_diameter=16, backend="cellpose")
        )
    assert str(tmp_path / "cpsam") in str(info.value)


def test_cellpose_backend_uses_local_weights_and_pairs_nuclei(
    synthetic_image, monkeypatch, tmp_path
):
    from phenoadapt.cells import cellpose_backend

    cellpose_backend._load_model.cache_clear()
    truth = segment_field(synthetic_image, CP5, SYNTH)
    # The stand-in model "finds" the classical cells, renumbered in reverse order.
    reversed_cells = np.where(truth.cells > 0, truth.n_cells + 1 - truth.cells, 0)
    calls = _fake_cellpose(monkeypatch, lambda image: reversed_cells)
    (tmp_path / "cpsam").write_bytes(b"weights")
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    seg = segment_field(
        synthetic_image, CP5, SegmentationParams(nucleus_diameter=16, backend="cellpose")
    )
    cellpose_backend._load_model.cache_clear()
    assert calls["weights"] == str(tmp_path / "cpsam")
    assert calls["kwargs"]["channel_axis"] == -1
    assert seg.n_cells == truth.n_cells
    _check_consistent(seg)
    assert match_labels(truth.cells, seg.cells).f1 == 1.0


def test_pair_cells_with_nuclei_drops_cells_without_nucleus():
    cells = np.zeros((20, 20), int)
    cells[:10, :10] = 7
    cells[10:, 10:] = 3  # no nucleus inside
    nuclei = np.zeros((20, 20), int)
    nuclei[1:6, 1:6] = 1  # 25 pixels inside cell 7
    nuclei[8:10, 8:13] = 2  # 4 pixels inside cell 7, the rest in the background
    seg = pair_cells_with_nuclei(cells, nuclei)
    assert seg.n_cells == 1
    assert (seg.nuclei > 0).sum() == 25  # cell 7 keeps the nucleus it overlaps most
    _check_consistent(seg)


# -- matching ------------------------------------------------------------------
def test_match_labels_counts_and_iou():
    true = np.zeros((10, 30), int)
    true[2:8, 2:8] = 1
    true[2:8, 12:18] = 2
    pred = np.zeros_like(true)
    pred[2:8, 3:9] = 5  # IoU 30/42 with object 1
    pred[2:8, 22:28] = 9  # matches nothing
    scores = match_labels(true, pred)
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 1)
    assert scores.f1 == pytest.approx(0.5)
    assert scores.mean_iou == pytest.approx(30 / 42)
    assert match_labels(true, true).f1 == 1.0
    assert match_labels(true, np.zeros_like(true)).f1 == 0.0


def test_labels_from_outlines_fills_shared_and_open_outlines():
    from skimage.segmentation import find_boundaries

    labels = np.zeros((40, 60), int)
    labels[5:20, 5:25] = 1
    labels[5:20, 25:45] = 2  # touches object 1
    labels[28:40, 10:30] = 3  # cut by the bottom edge: open outline
    outlines = find_boundaries(labels, mode="inner")
    filled = labels_from_outlines(np.stack([outlines * 0, outlines * 255, outlines * 0], -1))
    assert filled.max() == 3
    assert match_labels(labels, filled).mean_iou > 0.9
