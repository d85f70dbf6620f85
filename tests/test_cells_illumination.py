"""Illumination correction: a known shading is recovered, cached once, and used by segmentation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenoadapt import schema
from phenoadapt.cells import SegmentationParams, segment_plate
from phenoadapt.cells import illumination as illum
from phenoadapt.cells.illumination import (
    PLATE_CACHE_FOLDER,
    apply_illumination,
    block_mean,
    compute_illumination,
)
from phenoadapt.cli import main
from phenoadapt.errors import Cancelled, CellsError
from phenoadapt.plate import open_plate
from phenoadapt.plate.synthetic import EffectStrengths, SyntheticPlateConfig, generate_plate

REAL = Path(__file__).parent / "data" / "phenix_BR00143976"
WELLS = ("A01", "A02", "A03", "A04", "A07", "A08")
#: Twelve 256 px fields with the generator's own vignetting and tilt switched off,
#: so the only shading is the one the test multiplies in.
FLAT = SyntheticPlateConfig(
    n_wells=96,
    sites=2,
    field_shape=(256, 256),
    wells=WELLS,
    strengths=EffectStrengths(lab_vignetting=0.0, lab_tilt=0.0),
)


def known_shading(shape: tuple[int, int]) -> np.ndarray:
    """An off-centre fall-off to 45% plus a tilt: nothing a flat field would show."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    y, x = y / (shape[0] - 1), x / (shape[1] - 1)
    radial = 1.0 - 0.5 * ((x - 0.65) ** 2 + (y - 0.4) ** 2) / 0.6
    return (radial * (1.0 - 0.2 * y)).astype(np.float32)


def _shade(folder: Path) -> None:
    """Multiply every plane of a plate folder by :func:`known_shading`."""
    for path in sorted(folder.glob("*.tiff")):
        plane = tifffile.imread(path)
        shaded = np.rint(plane * known_shading(plane.shape)).astype(np.uint16)
        tifffile.imwrite(path, shaded)


@pytest.fixture(scope="module")
def shaded_source(tmp_path_factory) -> Path:
    plate = generate_plate(tmp_path_factory.mktemp("illum"), FLAT, seed=5, plate_id="SHADE")
    _shade(plate.path)
    return plate.path


@pytest.fixture
def shaded_dir(shaded_source, tmp_path) -> Path:
    """A fresh copy of the shaded plate (no cache yet) for each test."""
    return Path(shutil.copytree(shaded_source, tmp_path / "SHADE"))


def _count_reads(plate, monkeypatch) -> list:
    reads: list = []
    original = plate.read_plane

    def counting(well, site, channel):
        reads.append((well, site))
        return original(well, site, channel)

    monkeypatch.setattr(plate, "read_plane", counting)
    return reads


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_function_recovers_a_known_shading(shaded_dir):
    plate = open_plate(shaded_dir)
    result = compute_illumination(plate, use_cache=False)
    truth = known_shading(plate.field_shape)
    assert result.n_fields == 12 and result.channels == tuple(c.key for c in plate.channels)
    for channel in plate.channels:
        function = result.function(channel)
        assert function.shape == plate.field_shape and function.dtype == np.float32
        assert function.min() >= 1.0 - 1e-6  # robust minimum rescaled to 1
        assert _correlation(function, truth) > 0.9, channel.name


def _position_spread(images: list[np.ndarray]) -> float:
    """Coefficient of variation, over a 4x4 grid of positions, of the fields' mean intensity."""
    means = np.mean([block_mean(image, (4, 4)) for image in images], axis=0)
    return float(means.std() / means.mean())


def test_correction_evens_out_intensity_across_the_field(shaded_dir):
    plate = open_plate(shaded_dir)
    result = compute_illumination(plate, use_cache=False)
    dna = plate.channel("DNA")
    raw = [plate.read_plane(w, s, dna).astype(np.float32) for w, s in plate.fields()]
    corrected = [apply_illumination(image, result.function(dna)) for image in raw]
    before, after = _position_spread(raw), _position_spread(corrected)
    assert after < 0.5 * before, (before, after)


def test_cache_is_written_once_and_reused(shaded_dir, monkeypatch):
    plate = open_plate(shaded_dir)
    reads = _count_reads(plate, monkeypatch)
    first = compute_illumination(plate)
    assert len(reads) == 12 * len(plate.channels)
    assert not first.loaded
    assert first.path is not None and first.path.parent == shaded_dir / PLATE_CACHE_FOLDER
    assert first.path.stat().st_size < 500_000  # the reduced functions, not full fields
    plate_again = open_plate(shaded_dir)
    again_reads = _count_reads(plate_again, monkeypatch)
    second = compute_illumination(plate_again)
    assert second.loaded and second.path == first.path and again_reads == []
    np.testing.assert_array_equal(second.reduced, first.reduced)
    np.testing.assert_array_equal(second.function("1"), first.function("1"))
    # The plate reader still opens the folder: hidden cache files are not images.
    assert open_plate(shaded_dir).n_fields == 12


def test_changed_file_is_computed_afresh(shaded_dir):
    first = compute_illumination(open_plate(shaded_dir))
    path = next(shaded_dir.glob("r01c01f01p01-ch1*.tiff"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = compute_illumination(open_plate(shaded_dir))
    assert not second.loaded and second.key != first.key


def test_read_only_plate_folder_caches_in_the_user_folder(shaded_dir, tmp_path, monkeypatch):
    user = tmp_path / "user-cache"
    monkeypatch.setattr(illum, "user_cache_folder", lambda: user)
    # Root ignores permission bits: make the plate folder read-only for the writability check.
    real_check = illum.is_writable
    monkeypatch.setattr(
        illum, "is_writable", lambda folder: not str(folder).startswith(str(shaded_dir))
    )
    first = compute_illumination(open_plate(shaded_dir))
    assert first.path is not None and first.path.parent == user
    assert first.path.name.startswith("SHADE-")
    assert not (shaded_dir / PLATE_CACHE_FOLDER).exists()
    second = compute_illumination(open_plate(shaded_dir))
    assert second.loaded and second.path == first.path
    assert real_check(tmp_path)


def test_cache_holds_no_pickle_and_a_pickled_cache_is_ignored(shaded_dir, monkeypatch):
    first = compute_illumination(open_plate(shaded_dir))
    with np.load(first.path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)
    # Replace the cache by a file whose arrays need pickle (an object array).
    np.savez(
        first.path,
        version=np.int64(illum.CACHE_VERSION),
        key=np.str_(first.key),
        channels=np.array(list(first.channels), dtype=object),
        reduced=first.reduced,
        field_shape=np.array(first.field_shape),
        n_fields=np.int64(first.n_fields),
    )
    plate = open_plate(shaded_dir)
    reads = _count_reads(plate, monkeypatch)
    again = compute_illumination(plate)
    assert not again.loaded and len(reads) > 0  # recomputed, never unpickled
    with np.load(again.path, allow_pickle=False) as data:  # and the cache rewritten clean
        assert data["channels"].dtype.kind == "U"


def test_large_plates_are_sampled_with_a_seed(shaded_dir, monkeypatch):
    plate = open_plate(shaded_dir)
    reads = _count_reads(plate, monkeypatch)
    a = compute_illumination(plate, max_fields=10, seed=1, use_cache=False)
    fields_a = sorted(set(reads))
    reads.clear()
    b = compute_illumination(plate, max_fields=10, seed=1, use_cache=False)
    assert a.n_fields == 10 and sorted(set(reads)) == fields_a
    np.testing.assert_array_equal(a.reduced, b.reduced)


def test_too_few_fields_and_bad_settings_are_refused(shaded_dir):
    with pytest.raises(CellsError, match="1 field.*at least 10.*illumination-correction"):
        compute_illumination(open_plate(REAL), use_cache=False)
    plate = open_plate(shaded_dir)
    with pytest.raises(CellsError, match="Unknown statistic 'max'"):
        compute_illumination(plate, statistic="max")
    with pytest.raises(CellsError, match="min_fields"):
        compute_illumination(plate, min_fields=20, max_fields=10)
    with pytest.raises(CellsError, match="no channel 'GFP'"):
        compute_illumination(plate, channels=["GFP"])


def test_cellprofiler_mean_is_available_and_keyed_apart(shaded_dir):
    plate = open_plate(shaded_dir)
    quartile = compute_illumination(plate)
    mean = compute_illumination(plate, statistic="mean")
    assert not mean.loaded and mean.key != quartile.key and mean.path != quartile.path
    truth = known_shading(plate.field_shape)
    assert _correlation(mean.function(plate.channel("Mito")), truth) > 0.8


def test_progress_and_cancel(shaded_dir):
    events = []
    compute_illumination(
        open_plate(shaded_dir), use_cache=False, progress=lambda *e: events.append(e)
    )
    assert events[0] == ("illumination", 0, 12) and events[-1] == ("illumination", 12, 12)
    with pytest.raises(Cancelled, match="cancelled after 0 of 12"):
        compute_illumination(open_plate(shaded_dir), use_cache=False, cancel=lambda: True)


def test_apply_checks_shapes_and_leaves_channels_without_function():
    image = np.full((2, 8, 8), 100, np.uint16)
    function = np.full((8, 8), 2.0, np.float32)
    out = apply_illumination(image, [function, None])
    assert out.dtype == np.float32
    assert (out[0] == 50).all() and (out[1] == 100).all()
    with pytest.raises(CellsError, match="one function"):
        apply_illumination(image, [function])
    with pytest.raises(CellsError, match="another size"):
        apply_illumination(image[0], np.ones((4, 4), np.float32))


def test_segment_plate_uses_the_corrected_fields(shaded_dir):
    plate = open_plate(shaded_dir)
    params = SegmentationParams(nucleus_diameter=16)
    wells = ["A01", "A02", "A03"]
    raw = segment_plate(plate, wells, segmentation=params, workers=1)
    assert not (shaded_dir / PLATE_CACHE_FOLDER).exists()  # off by default: nothing computed
    corrected = segment_plate(
        plate,
        wells,
        segmentation=SegmentationParams(nucleus_diameter=16, illumination_correction=True),
        workers=2,
    )
    assert not raw.failures and not corrected.failures
    assert (shaded_dir / PLATE_CACHE_FOLDER).is_dir()  # computed once (all 12 fields), cached
    column = "Cells_Intensity_MeanIntensity_DNA"
    # Divided by functions >= 1: every cell is dimmer; the dim corner is lifted relative
    # to the bright one, so intensities spread less across positions.
    assert corrected.cells[column].median() < raw.cells[column].median()
    assert _spread_by_position(corrected.cells, column) < _spread_by_position(raw.cells, column)


def _spread_by_position(cells: pd.DataFrame, column: str) -> float:
    """Coefficient of variation of a column's mean over quadrants of the field."""
    quadrant = (cells[schema.CENTROID_Y] > 128).astype(int) * 2 + (cells[schema.CENTROID_X] > 128)
    means = cells.groupby(quadrant)[column].mean()
    return float(means.std() / means.mean())


def test_cli_flag_corrects_end_to_end(shaded_dir, tmp_path, capsys):
    out = tmp_path / "cells.csv"
    status = main(
        [
            "segment",
            str(shaded_dir),
            "--nucleus-diameter",
            "16",
            "--no-texture",
            "--workers",
            "1",
            "--illumination-correction",
            "--wells",
            "A01,A02",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    assert "4 of 4 fields segmented" in capsys.readouterr().out
    assert list((shaded_dir / PLATE_CACHE_FOLDER).glob("illumination-*.npz"))
    plain = tmp_path / "plain.csv"
    args = ["segment", str(shaded_dir), "--nucleus-diameter", "16", "--no-texture", "--wells"]
    args.append("A01,A02")
    assert main([*args, "--workers", "1", "--out", str(plain)]) == 0
    column = "Cells_Intensity_MeanIntensity_DNA"
    assert pd.read_csv(out)[column].median() < pd.read_csv(plain)[column].median()


def test_cli_flag_on_a_one_field_plate_is_refused(tmp_path, capsys):
    status = main(
        ["segment", str(REAL), "--illumination-correction", "--out", str(tmp_path / "c.csv")]
    )
    assert status == 2
    assert "at least 10" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()


def test_minimum_ignores_one_blank_field(shaded_dir):
    """The minimum is each pixel's second-lowest value: one blank field cannot zero it."""
    plate = open_plate(shaded_dir)
    first = sorted(shaded_dir.glob("r01c01f01p01-*.tiff"))
    assert first, "the synthetic layout changed"
    for path in first:
        tifffile.imwrite(path, np.zeros_like(tifffile.imread(path)))
    result = compute_illumination(open_plate(shaded_dir), statistic="minimum", use_cache=False)
    truth = known_shading(plate.field_shape)
    for channel in plate.channels:
        assert _correlation(result.function(channel), truth) > 0.9, channel.name


def test_statistic_is_a_segmentation_setting_and_a_cli_choice(shaded_dir, tmp_path, capsys):
    with pytest.raises(CellsError, match="Unknown illumination_statistic 'max'"):
        SegmentationParams(illumination_statistic="max")
    out = tmp_path / "cells.csv"
    args = ["segment", str(shaded_dir), "--nucleus-diameter", "16", "--no-texture"]
    args += ["--workers", "1", "--wells", "A01", "--out", str(out)]
    assert main([*args, "--illumination-correction", "--illumination-statistic", "mean"]) == 0
    cached = list((shaded_dir / PLATE_CACHE_FOLDER).glob("illumination-*.npz"))
    assert len(cached) == 1
    mean = compute_illumination(open_plate(shaded_dir), statistic="mean")
    assert mean.loaded and mean.path == cached[0]  # the CLI computed the mean's functions
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses an unknown choice
        main([*args[:-1], str(tmp_path / "bad.csv"), "--illumination-statistic", "max"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
