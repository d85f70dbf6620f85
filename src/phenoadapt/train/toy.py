"""Tiny synthetic crops with plate effects, for tests, tutorials and quick benchmarks.

Not a plate simulator (see :mod:`phenoadapt.plate.synthetic` for whole synthetic
plates): this makes crop tensors directly, in a fraction of a second, with the
one property plate-context adaptation is about.  Each crop is a blurred "cell"
on a background; a treated cell of class ``k`` is brighter (by ``signal``) in
channel ``k mod C``; controls are not.  Each plate multiplies every channel
by its own gain and adds its own offset, the way lamp power, exposure and
staining differ between plates.  A gain on channel ``k`` therefore looks like
class ``k`` to a network normalized with training statistics, while statistics
of the plate's own cells (controls included) remove it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import schema
from ..plate.wells import well_name


def _cell_images(n: int, n_channels: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Blob-shaped cells with random position, radius and brightness, plus texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy = size / 2 + rng.normal(0, size / 10, n)
    cx = size / 2 + rng.normal(0, size / 10, n)
    radius = size / 5 * rng.uniform(0.8, 1.25, n)
    dist2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    blob = np.exp(-dist2 / (2 * radius[:, None, None] ** 2))
    brightness = rng.uniform(300, 500, (n, n_channels))
    texture = rng.normal(1.0, 0.1, (n, n_channels, size, size))
    return (100.0 + brightness[:, :, None, None] * blob[:, None] * texture).astype(np.float32)


def make_toy_plates(
    plates: int | Sequence[str] = 4,
    *,
    n_classes: int = 3,
    n_channels: int = 3,
    size: int = 16,
    treated_per_class: int = 32,
    n_controls: int = 64,
    signal: float = 0.6,
    gain_spread: float = 0.2,
    shifts: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    cells_per_well: int = 16,
    seed: int = 0,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Crops and a cell table for a few plates with per-plate channel gain and offset.

    Parameters
    ----------
    plates
        Number of plates (named ``P1``...) or their names.
    n_classes, n_channels, size
        Classes (``moa_a``, ``moa_b``...), channels and crop size.
    treated_per_class, n_controls
        Cells per class and control cells per plate.
    signal
        Relative brightening of channel ``k mod C`` in class-``k`` cells.
    gain_spread
        Plate gains are ``exp(U(-gain_spread, gain_spread))`` per channel; offsets
        ``U(0, 20)``.
    shifts
        Plate name -> (gains, offsets) per channel, overriding the random ones
        (e.g. a strongly shifted held-out plate).
    cells_per_well
        Cells per well (wells are filled in order, controls first).
    seed
        Seed.

    Returns
    -------
    images, table
        ``(n, C, size, size)`` float32 crops of raw intensities, and the per-cell
        table (``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Role``,
        ``Metadata_MoA``, ``Metadata_Treatment``).
    """
    names = [f"P{i + 1}" for i in range(plates)] if isinstance(plates, int) else list(plates)
    classes = [f"moa_{chr(ord('a') + k)}" for k in range(n_classes)]
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for plate in names:
        labels = np.concatenate(
            [np.full(n_controls, -1), np.repeat(np.arange(n_classes), treated_per_class)]
        )
        crops = _cell_images(len(labels), n_channels, size, rng)
        for k in range(n_classes):
            # Brighten the cell (not the background) of channel k in class-k cells.
            chan = crops[labels == k, k % n_channels]
            crops[labels == k, k % n_channels] = 100.0 + (chan - 100.0) * (1 + signal)
        if shifts is not None and plate in shifts:
            gain = np.asarray(shifts[plate][0], dtype=np.float32)
            offset = np.asarray(shifts[plate][1], dtype=np.float32)
        else:
            gain = np.exp(rng.uniform(-gain_spread, gain_spread, n_channels)).astype(np.float32)
            offset = rng.uniform(0, 20, n_channels).astype(np.float32)
        crops = crops * gain[None, :, None, None] + offset[None, :, None, None]
        crops += rng.normal(0, 5, crops.shape).astype(np.float32)
        images.append(np.clip(crops, 0, 65535).astype(np.float32))
        for i, label in enumerate(labels):
            rows.append(
                {
                    schema.PLATE: plate,
                    schema.WELL: _well(i // cells_per_well),
                    schema.ROLE: (schema.Role.CONTROL if label < 0 else schema.Role.TREATED).value,
                    schema.MOA: np.nan if label < 0 else classes[label],
                    schema.TREATMENT: "DMSO" if label < 0 else f"cpd_{classes[label]}",
                }
            )
    return np.concatenate(images), pd.DataFrame(rows)


def _well(index: int) -> str:
    """Well name of the ``index``-th well in row-major order of a 384-well plate."""
    return well_name(index // 24 + 1, index % 24 + 1)
