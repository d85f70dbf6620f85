"""Gaussian blur and smooth random textures computed in Fourier space.

A field is painted on a canvas padded on every side and sized to a fast FFT
length, so blurring by multiplying spectra is several times faster than
direct convolution, and its wrap-around edges only touch the padding, which
is cropped away before the field is written.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.fft as sfft


@lru_cache(maxsize=32)
def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Squared angular frequencies along y (column vector) and x (row vector) of an rfft2."""
    fy = (2 * math.pi * sfft.fftfreq(shape[0])).astype(np.float32)[:, None]
    fx = (2 * math.pi * sfft.rfftfreq(shape[1])).astype(np.float32)[None, :]
    return fy**2, fx**2


def gaussian_transfer(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Fourier transfer function of a Gaussian of width ``sigma`` pixels (rfft2 layout)."""
    fy2, fx2 = _frequencies(tuple(shape))
    # exp(-(fy2 + fx2) s^2 / 2) as an outer product of two 1-D factors.
    return np.exp(-0.5 * sigma**2 * fy2) * np.exp(-0.5 * sigma**2 * fx2)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur a 2-D float image with a Gaussian of width ``sigma`` (periodic edges)."""
    if sigma <= 0:
        return image
    spectrum = sfft.rfft2(image)
    spectrum *= gaussian_transfer(image.shape, sigma)
    return sfft.irfft2(spectrum, s=image.shape).astype(np.float32, copy=False)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth Gaussian random texture of correlation length ``sigma``, zero mean, unit sd.

    The half spectrum of white noise is drawn directly (complex normal values)
    and shaped by a Gaussian transfer function.
    """
    half = (shape[0], shape[1] // 2 + 1)
    spectrum = rng.standard_normal((*half, 2), dtype=np.float32).view(np.complex64)[..., 0]
    spectrum *= gaussian_transfer(shape, sigma)
    texture = sfft.irfft2(spectrum, s=shape)
    texture -= texture.mean()
    return (texture / (texture.std() + 1e-12)).astype(np.float32, copy=False)
