"""glcm_properties: every Haralick property at once, as scikit-image computes each."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.feature import graycoprops

from phenoadapt.cells.measure import _TEXTURE, glcm_properties


@pytest.mark.parametrize("seed", range(5))
def test_matches_graycoprops_on_random_matrices(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, size=(8, 8, 4))
    counts[..., 1] = 0
    counts[3, 3, 1] = 7  # one grey level only: a flat matrix, correlation 1
    counts[..., 2] = 0  # no pairs at all in this direction
    expected = np.stack([graycoprops(counts[:, :, None, :], prop)[0] for prop in _TEXTURE], axis=0)
    np.testing.assert_allclose(glcm_properties(counts), expected, rtol=1e-12, atol=1e-15)
