"""The image filters of the classical segmentation, on scipy or on torch (GPU when there is one).

``engine="scipy"`` (the default) is scikit-image / scipy.ndimage, as the
method was written.  ``engine="torch"`` runs the same separable kernels as
torch convolutions on the first CUDA device when torch sees one, else on the
CPU (a segmentation asked for ``filters="torch"`` without a GPU uses scipy:
:func:`resolve_engine`): the same values to float32 rounding (relative ~1e-6), which can move a
threshold decision on a pixel that sits exactly on it, so segmentations agree
to a few pixels, not bit for bit.  ``benchmarks/bench_segmentation.py``
measures both engines; on a CPU torch does not beat scipy, and the filters are
a small share of a field's time (the watersheds and distance transforms, which
have no torch equivalent here, are most of it).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from skimage import filters

FILTER_ENGINES = ("scipy", "torch")


def gaussian(image: np.ndarray, sigma: float, engine: str = "scipy") -> np.ndarray:
    """``skimage.filters.gaussian(image, sigma, preserve_range=True)`` in float32.

    Parameters
    ----------
    image
        2-D image (any real dtype).
    sigma
        Standard deviation of the kernel in pixels (truncated at 4 sigma, edges
        repeated: scipy's ``mode="nearest"``).
    engine
        ``"scipy"`` or ``"torch"`` (see the module's notes).

    Returns
    -------
    numpy.ndarray
        float32 image of the same shape.
    """
    image = np.asarray(image, dtype=np.float32)
    if engine == "scipy":
        return filters.gaussian(image, sigma=sigma, preserve_range=True)
    radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4.0
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return _separable_torch(image, kernel / kernel.sum(), kernel / kernel.sum())


def sobel(image: np.ndarray, engine: str = "scipy") -> np.ndarray:
    """``skimage.filters.sobel(image)``: edge magnitude, sqrt of the mean squared derivative.

    With a 3-tap kernel, scipy's ``mode="reflect"`` repeats the edge pixel,
    which is what the torch path's replicate padding does.
    """
    image = np.asarray(image, dtype=np.float32)
    if engine == "scipy":
        return filters.sobel(image)
    smooth = np.array([1.0, 2.0, 1.0]) / 4
    # Correlation, as scipy's: output[i] = sum_k w[k] * input[i + k - 1].
    derivative = np.array([1.0, 0.0, -1.0])
    along_rows = _separable_torch(image, derivative, smooth)
    along_cols = _separable_torch(image, smooth, derivative)
    return np.sqrt((along_rows**2 + along_cols**2) / 2).astype(np.float32)


def resolve_engine(engine: str) -> str:
    """The engine a segmentation uses for ``SegmentationParams.filters``.

    ``"torch"`` pays only on a GPU (on a CPU torch's convolutions are several
    times slower than scipy's), so without CUDA it falls back to ``"scipy"``.
    """
    if engine == "torch" and torch_device() == "cpu":
        return "scipy"
    return engine


def torch_device() -> str:
    """Where the torch engine runs: ``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _separable_torch(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Correlate ``image`` with ``rows`` along axis 0 and ``cols`` along axis 1 (edges repeated)."""
    import torch
    import torch.nn.functional as F

    device = torch_device()
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device)[None, None]
    k0 = _kernel(tuple(rows), device).view(1, 1, -1, 1)
    k1 = _kernel(tuple(cols), device).view(1, 1, 1, -1)
    p0, p1 = len(rows) // 2, len(cols) // 2
    t = F.conv2d(F.pad(t, (0, 0, p0, p0), mode="replicate"), k0)
    t = F.conv2d(F.pad(t, (p1, p1, 0, 0), mode="replicate"), k1)
    return t[0, 0].cpu().numpy()


@lru_cache(maxsize=16)
def _kernel(weights: tuple[float, ...], device: str):
    import torch

    # torch's conv2d is a correlation, like scipy's correlate1d: no flip.
    return torch.tensor(weights, dtype=torch.float32, device=device)
