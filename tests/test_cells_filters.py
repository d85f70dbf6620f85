"""The torch engine of the segmentation filters gives scipy's values (issue 14.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phenoadapt.cells import SegmentationParams, classical, filters, segment_field
from phenoadapt.errors import CellsError
from phenoadapt.plate import open_plate

REAL = Path(__file__).parent / "data" / "phenix_BR00143976"


@pytest.fixture(scope="module")
def real_field():
    plate = open_plate(REAL)
    return plate.read_field(*next(plate.fields()))[:, 200:700, 200:700], plate.channels


@pytest.mark.parametrize("sigma", [0.8, 2.0, 3.3])
def test_torch_gaussian_is_scipys(real_field, sigma):
    plane = real_field[0][0]
    ref = filters.gaussian(plane, sigma)
    np.testing.assert_allclose(filters.gaussian(plane, sigma, "torch"), ref, rtol=1e-5)


def test_torch_sobel_is_scipys(real_field):
    plane = np.log1p(real_field[0][3].astype(np.float32))
    ref = filters.sobel(plane)
    got = filters.sobel(plane, "torch")
    # Near-zero gradients lose digits to float32 cancellation: an absolute tolerance there.
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.max()))


def test_torch_engine_segments_as_scipy(real_field, monkeypatch):
    image, channels = real_field
    ref = segment_field(image, channels)
    monkeypatch.setattr(classical, "resolve_engine", lambda engine: engine)  # torch even on CPU
    got = segment_field(image, channels, SegmentationParams(filters="torch"))
    assert got.n_cells == ref.n_cells
    assert np.mean(got.cells != ref.cells) < 1e-3


def test_torch_engine_falls_back_to_scipy_without_gpu(monkeypatch):
    monkeypatch.setattr(filters, "torch_device", lambda: "cpu")
    assert filters.resolve_engine("torch") == "scipy"
    monkeypatch.setattr(filters, "torch_device", lambda: "cuda")
    assert filters.resolve_engine("torch") == "torch"
    assert filters.resolve_engine("scipy") == "scipy"


def test_unknown_engine_is_refused():
    with pytest.raises(CellsError, match="scipy, torch"):
        SegmentationParams(filters="opencl")
