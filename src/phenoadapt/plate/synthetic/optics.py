"""From stain to camera counts: staining, blur, illumination, background, noise.

Per channel, in this order (``c`` the channel, ``S`` the painted stain):

1. stain amount: ``S * brightness[c] * batch.stain[c] * well.stain[c] * field_gain``
2. blur with a Gaussian PSF of width
   ``sqrt((lab.psf_sigma * lab.chromatic[c])**2 + well.extra_blur**2 + field_defocus**2)``
3. crop the canvas to the field
4. ``counts = illumination * (lab.gain[c] * signal + lab.background[c]) + lab.offset``
5. shot noise (``lab.shot_noise * sqrt(signal)``) and read noise, Gaussian approximations
6. round and clip to uint16
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .effects import BatchEffects, LabEffects, WellConditions, illumination
from .spectral import gaussian_blur

UINT16_MAX = 65535


@dataclass(frozen=True)
class FieldJitter:
    """Random technical variation of one field.

    Parameters
    ----------
    gain
        Intensity factor of the field.
    defocus
        Extra blur of the field in pixels.
    density
        Factor on the number of cells.
    """

    gain: float = 1.0
    defocus: float = 0.0
    density: float = 1.0

    @classmethod
    def sample(
        cls, rng: np.random.Generator, gain_sd: float, focus_sd: float, density_sd: float
    ) -> FieldJitter:
        """Draw the jitter of one field."""
        z = rng.standard_normal(3)
        return cls(
            gain=math.exp(gain_sd * z[0]),
            defocus=abs(focus_sd * z[1]),
            density=math.exp(density_sd * z[2]),
        )


def image_field(
    rng: np.random.Generator,
    stains: np.ndarray,
    crop: tuple[slice, slice],
    brightness: tuple[float, ...],
    lab: LabEffects,
    batch: BatchEffects,
    well: WellConditions,
    jitter: FieldJitter,
) -> np.ndarray:
    """Turn painted stains into the uint16 planes an instrument would record.

    Parameters
    ----------
    rng
        Random generator (noise).
    stains
        (5, Y, X) painted canvas from :func:`~.paint.paint_stains`.
    crop
        Slices of the canvas that are the field.
    brightness
        Counts at unit gain per channel.
    lab, batch, well, jitter
        Technical effects of the lab, batch, well position and field.

    Returns
    -------
    (5, y, x) uint16 array.
    """
    field_shape = (crop[0].stop - crop[0].start, crop[1].stop - crop[1].start)
    profile = illumination(lab, field_shape)
    out = np.empty((len(stains), *field_shape), np.uint16)
    for c, stain in enumerate(stains):
        amount = brightness[c] * batch.stain[c] * well.stain[c] * jitter.gain
        sigma = math.sqrt(
            (lab.psf_sigma * lab.chromatic[c]) ** 2 + well.extra_blur**2 + jitter.defocus**2
        )
        signal = stain * np.float32(amount)
        if sigma > 0.05:
            signal = np.maximum(gaussian_blur(signal, sigma), 0)
        signal = signal[crop]
        counts = profile * (np.float32(lab.gain[c]) * signal + np.float32(lab.background[c]))
        if lab.shot_noise > 0 or lab.read_noise > 0:
            variance = np.float32(lab.shot_noise**2) * counts + np.float32(lab.read_noise**2)
            counts = counts + np.sqrt(variance) * rng.standard_normal(field_shape, np.float32)
        counts = counts + np.float32(lab.offset)
        out[c] = np.clip(np.rint(counts), 0, UINT16_MAX).astype(np.uint16)
    return out
