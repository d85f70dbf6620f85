"""Per-plate illumination correction, computed as CellProfiler computes it for Cell Painting.

Microscopes light a field unevenly (vignetting, a tilted lamp), so the same cell
is dimmer in a corner than in the centre.  CellProfiler's Cell Painting
pipelines (the Broad imaging platform and JUMP ``illum.cppipe``) estimate one
illumination function per channel and plate and divide every image by it:

1. ``Resize`` each image by 0.1 (a 1080 px Phenix field becomes 108 px);
2. ``CorrectIlluminationCalculate``: *Regular*, *All* images of the plate
   averaged, *Median Filter* of size 20 (on the reduced image), rescaled so that
   the robust minimum (the 2nd percentile) is 1;
3. ``Resize`` back by 10 (bilinear) and ``CorrectIlluminationApply`` with *Divide*.

This module does the same with numpy, scipy and scikit-image.  Two choices
differ on purpose:

- the reduction is an exact block mean rather than bilinear sampling (no
  aliasing of bright nuclei into the average);
- the average over fields is, by default, the lower quartile of each pixel
  over the fields rather than their plain mean.  A pixel lies in background in
  most fields, so its lower quartile is "background x illumination", free of the
  cells that happen to lie there; the plain mean keeps their imprint until
  hundreds of fields are averaged.  Measured on synthetic plates of 12-24
  fields with a known shading (docs/segmentation.md): the quartile recovers it
  with a correlation of 0.99 in every channel of sparse plates and 0.86-0.99 on
  confluent ones; the mean (``statistic="mean"``, CellProfiler's own average)
  gives 0.48-0.92 on sparse plates and 0.95-0.98 on confluent cytoplasm; the
  per-pixel minimum (``statistic="minimum"``, the second-lowest value so one
  blank field cannot decide it) is as good as the quartile on sparse plates and
  on nuclei, but drops to 0.50-0.97 on confluent cytoplasm.  No statistic wins
  everywhere; the quartile's worst case is the least bad.

Large plates are sampled: a seeded subset of at most ``max_fields`` fields
(200 by default) gives the same smooth function as all of them at a fraction of
the reads.

The function is saved once per plate as a small ``.npz`` (the reduced functions,
a few hundred kilobytes, read back with ``allow_pickle=False``) in a hidden
``.phenoadapt`` folder of the plate folder, or in the per-user cache folder
when the plate folder is read-only; a second run loads it instead of reading
the plate again.  The cache is keyed by the plate (id, path, channels, fields),
the sampled files (names, sizes, modification times) and the settings, so a
changed plate is computed afresh.

BaSiCPy (a maintained flat-field library) was tried and left out: ``pip install
basicpy`` (2.0) pins numpy < 2, scipy 1.12 and pandas < 3 and would downgrade
the versions this package runs on (it also pulls hyperactive and pooch), and its
estimate is not the CellProfiler function users compare their results with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology, transform

from ..errors import Cancelled, CellsError, PlateReadError
from ..plate.channels import Channel
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn
from .params import ILLUMINATION_STATISTICS

log = logging.getLogger(__name__)

STAGE = "illumination"

#: Long side (pixels) fields are reduced to: JUMP resizes 1080 px fields by 0.1.
WORKING_SIDE = 108
#: Median filter size on the reduced image (JUMP: 20 on 108 px), scaled with it.
FILTER_SIZE = 20
#: Percentile that becomes 1 (CellProfiler's robust minimum, ROBUST_FACTOR 0.02).
ROBUST_PERCENTILE = 2.0
#: How each pixel is averaged over fields: the lower quartile (default), its minimum, the
#: median, or the plain mean (CellProfiler's "Regular" average).
STATISTICS = ILLUMINATION_STATISTICS
#: Fields read at most for a plate's functions.
MAX_FIELDS = 200
#: Fewest fields a function is computed from: with fewer, the average still shows
#: where the cells lie rather than how the field is lit (on the real one-field
#: plate of tests/data the function of its single field spans 1 to 7 and
#: correcting with it lowers the agreement with CellProfiler; see
#: docs/segmentation.md, "Illumination correction").
MIN_FIELDS = 10
#: Version of the computation and of the cache file; a change recomputes old caches.
CACHE_VERSION = 1
#: Hidden folder of the plate folder that holds the cache (plate readers skip hidden files).
PLATE_CACHE_FOLDER = ".phenoadapt"


@dataclass
class Illumination:
    """Illumination functions of a plate, one per channel.

    Attributes
    ----------
    channels
        Keys of the channels that have a function, in plate order.
    reduced
        (channel, h, w) float32 functions at the reduced working size, each with
        its robust minimum at 1 (values >= 1); :meth:`function` gives them at
        the field's size.
    field_shape
        (height, width) of the plate's fields.
    n_fields
        Number of fields averaged.
    key
        Fingerprint of the plate and settings the functions were computed from.
    path
        The cache file they were saved to or loaded from (None: not saved).
    loaded
        True when they came from the cache rather than from the plate's images.
    """

    channels: tuple[str, ...]
    reduced: np.ndarray
    field_shape: tuple[int, int]
    n_fields: int
    key: str
    path: Path | None = None
    loaded: bool = False
    _full: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def function(self, channel: Channel | str) -> np.ndarray:
        """The function of one channel (by :class:`Channel` or key) at the field's size."""
        key = channel.key if isinstance(channel, Channel) else channel
        if key not in self._full:
            try:
                index = self.channels.index(key)
            except ValueError:
                raise CellsError(
                    f"No illumination function for channel {key!r}: the plate's functions "
                    f"cover {', '.join(self.channels)}. Compute them for that channel."
                ) from None
            self._full[key] = upsample(self.reduced[index], self.field_shape)
        return self._full[key]

    def functions_for(self, channels: Sequence[Channel]) -> list[np.ndarray | None]:
        """Functions aligned with ``channels`` (None for a channel that has none)."""
        return [self.function(c) if c.key in self.channels else None for c in channels]


# -- applying -------------------------------------------------------------------
def apply_illumination(
    image: np.ndarray, functions: np.ndarray | Sequence[np.ndarray | None]
) -> np.ndarray:
    """Divide an image by its illumination functions (CorrectIlluminationApply, *Divide*).

    Parameters
    ----------
    image
        A (y, x) plane or a (channel, y, x) field.
    functions
        For a plane, one (y, x) function; for a field, one function per channel
        (None leaves that channel as it is), e.g. from
        :meth:`Illumination.functions_for`.

    Returns
    -------
    numpy.ndarray
        float32 image of the same shape, in the image's own intensity units
        (the functions are >= 1, so corrected values never exceed the raw ones).

    Raises
    ------
    CellsError
        When the functions do not match the image's channels or size.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return _divide(image, np.asarray(functions))
    if image.ndim != 3 or len(functions) != image.shape[0]:
        raise CellsError(
            f"Cannot correct an image of shape {image.shape} with {len(functions)} "
            "illumination functions: give one function (or None) per channel."
        )
    out = np.empty(image.shape, np.float32)
    for c, (plane, function) in enumerate(zip(image, functions, strict=True)):
        out[c] = plane if function is None else _divide(plane, np.asarray(function))
    return out


def _divide(plane: np.ndarray, function: np.ndarray) -> np.ndarray:
    if function.shape != plane.shape:
        raise CellsError(
            f"The illumination function is {function.shape} but the image is {plane.shape}: "
            "it was computed for fields of another size (another plate?)."
        )
    return (plane.astype(np.float32) / function).astype(np.float32)


# -- computing ------------------------------------------------------------------
def compute_illumination(
    plate: Plate,
    channels: Sequence[Channel | str] | None = None,
    *,
    max_fields: int = MAX_FIELDS,
    min_fields: int = MIN_FIELDS,
    statistic: str = "quartile",
    seed: int = 0,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Illumination:
    """Illumination functions of a plate, from its own images (or from its cache).

    Parameters
    ----------
    plate
        The plate.
    channels
        Channels (objects, names, roles or keys) to compute; all when None.
    max_fields
        Fields averaged at most; larger plates use a subset drawn with ``seed``.
    min_fields
        Plates with fewer fields are refused: their average shows the cells,
        not the illumination.
    statistic
        How each pixel is averaged over the fields: ``"quartile"`` (its lower
        quartile, robust to the cells lying there), ``"minimum"`` (its
        second-lowest value: best for sparse stains), ``"median"`` or ``"mean"``
        (CellProfiler's average, best for confluent stains over many fields).
    seed
        Seed of that subset.
    use_cache
        Load the functions saved by an earlier run with the same plate and
        settings, and save new ones; False always computes and saves nothing.
    progress
        Called as ``progress("illumination", fields_read, fields_to_read)``.
    cancel
        Polled between fields; when it returns True,
        :class:`~phenoadapt.errors.Cancelled` is raised.

    Returns
    -------
    Illumination

    Raises
    ------
    CellsError
        An unknown channel, a plate with fewer than ``min_fields`` fields, or
        no field could be read.
    """
    if not 1 <= min_fields <= max_fields:
        raise CellsError(
            f"min_fields={min_fields}, max_fields={max_fields}: need 1 <= min_fields <= max_fields."
        )
    if statistic not in STATISTICS:
        raise CellsError(f"Unknown statistic {statistic!r}: use one of {', '.join(STATISTICS)}.")
    chans = _resolve_channels(plate, channels)
    fields = list(plate.fields())
    if len(fields) < min_fields:
        raise CellsError(
            f"Plate {plate.plate_id} has {len(fields)} field(s): an illumination function needs "
            f"at least {min_fields}, so that the cells average out and only the illumination is "
            "left. Segment without illumination correction (drop --illumination-correction)."
        )
    sample = sample_fields(fields, max_fields, seed)
    key = plate_key(plate, chans, sample, statistic)
    if use_cache:
        cached = load_cached(plate, key)
        if cached is not None:
            return cached
    reduced, n_fields = _average_fields(plate, chans, sample, statistic, progress, cancel)
    result = Illumination(
        channels=tuple(c.key for c in chans),
        reduced=np.stack([smooth_and_rescale(plane) for plane in reduced]),
        field_shape=(int(plate.field_shape[0]), int(plate.field_shape[1])),
        n_fields=n_fields,
        key=key,
    )
    if use_cache:
        result.path = save_cached(plate, result)
    return result


def _resolve_channels(plate: Plate, channels: Sequence[Channel | str] | None) -> list[Channel]:
    if channels is None:
        return list(plate.channels)
    try:
        return [c if isinstance(c, Channel) else plate.channel(c) for c in channels]
    except KeyError as exc:
        raise CellsError(str(exc.args[0])) from None


def sample_fields(
    fields: list[tuple[str, int]], max_fields: int, seed: int
) -> list[tuple[str, int]]:
    """At most ``max_fields`` fields, drawn with ``seed`` and kept in plate order."""
    if len(fields) <= max_fields:
        return fields
    chosen = np.random.default_rng(seed).choice(len(fields), size=max_fields, replace=False)
    return [fields[i] for i in sorted(chosen)]


def _average_fields(
    plate: Plate,
    chans: list[Channel],
    sample: list[tuple[str, int]],
    statistic: str,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> tuple[np.ndarray, int]:
    """Per-pixel ``statistic`` of the reduced fields: (channel, h, w) and fields used."""
    small = working_shape(plate.field_shape)
    stack, skipped = [], []
    report = progress or (lambda stage, done, total: None)
    report(STAGE, 0, len(sample))
    for done, (well, site) in enumerate(sample):
        if cancel is not None and cancel():
            raise Cancelled(
                f"Illumination of plate {plate.plate_id} cancelled after {done} of "
                f"{len(sample)} fields."
            )
        try:
            planes = [plate.read_plane(well, site, ch) for ch in chans]
        except PlateReadError as exc:  # one unreadable field must not stop the plate
            skipped.append(str(exc))
        else:
            stack.append(np.stack([block_mean(p, small) for p in planes]))
        report(STAGE, done + 1, len(sample))
    if not stack:
        raise CellsError(
            f"No field of plate {plate.plate_id} could be read for its illumination functions: "
            f"{skipped[0]}"
        )
    if skipped:
        log.warning("illumination of %s: %d fields skipped", plate.plate_id, len(skipped))
    data = np.stack(stack)  # (field, channel, h, w)
    if statistic == "mean":
        average = data.mean(axis=0)
    elif statistic == "minimum":
        # The second-lowest value: one blank field (zeros) must not zero the function.
        rank = min(1, len(stack) - 1)
        average = np.partition(data, rank, axis=0)[rank]
    else:
        average = np.percentile(data, 25 if statistic == "quartile" else 50, axis=0)
    return average.astype(np.float32), len(stack)


def working_shape(field_shape: Sequence[int]) -> tuple[int, int]:
    """The reduced (h, w) the averaging and smoothing work at (fields are never enlarged)."""
    h, w = int(field_shape[0]), int(field_shape[1])
    scale = min(1.0, WORKING_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def block_mean(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Mean of ``plane`` over a grid of ``shape`` blocks (exact area reduction, no aliasing)."""
    if plane.shape == tuple(shape):
        return plane.astype(np.float32)
    rows = np.linspace(0, plane.shape[0], shape[0] + 1).astype(int)
    cols = np.linspace(0, plane.shape[1], shape[1] + 1).astype(int)
    sums = np.add.reduceat(plane, rows[:-1], axis=0, dtype=np.float64)
    sums = np.add.reduceat(sums, cols[:-1], axis=1)
    return (sums / np.outer(np.diff(rows), np.diff(cols))).astype(np.float32)


def smooth_and_rescale(average: np.ndarray) -> np.ndarray:
    """Median-filter a reduced average and rescale it so its robust minimum is 1.

    The filter is a disk of diameter :data:`FILTER_SIZE` on a
    :data:`WORKING_SIDE`-pixel image (scaled for smaller fields).  A channel
    whose robust minimum is not positive (blank) gets a flat function of ones.
    """
    size = FILTER_SIZE * max(average.shape) / WORKING_SIDE
    footprint = morphology.disk(max(1, round(size / 2)))
    smooth = ndi.median_filter(average.astype(np.float32), footprint=footprint, mode="reflect")
    robust = float(np.percentile(smooth, ROBUST_PERCENTILE))
    if not np.isfinite(robust) or robust <= 0:
        return np.ones_like(smooth, dtype=np.float32)
    return (np.maximum(smooth, robust) / robust).astype(np.float32)


def upsample(reduced: np.ndarray, field_shape: Sequence[int]) -> np.ndarray:
    """A reduced function brought back to the field's size (bilinear, as CellProfiler's Resize)."""
    shape = (int(field_shape[0]), int(field_shape[1]))
    if reduced.shape == shape:
        return reduced.astype(np.float32)
    full = transform.resize(
        reduced, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True
    )
    return full.astype(np.float32)


# -- cache ----------------------------------------------------------------------
def plate_key(
    plate: Plate,
    channels: Sequence[Channel],
    sample: Sequence[tuple[str, int]],
    statistic: str = "quartile",
) -> str:
    """Fingerprint of what the functions depend on: plate, sampled files and settings.

    The sampled fields stand for ``max_fields`` and ``seed``; their files' names,
    sizes and modification times for the pixels (reading them would cost a run).
    """
    all_fields = "|".join(f"{w}:{s}" for w, s in plate.fields())
    payload = {
        "version": CACHE_VERSION,
        "plate": plate.plate_id,
        "path": str(Path(plate.path).resolve()) if plate.path is not None else None,
        "layout": plate.layout,
        "shape": list(map(int, plate.field_shape)),
        "dtype": str(np.dtype(plate.dtype)),
        "channels": [c.key for c in channels],
        "fields": hashlib.sha256(all_fields.encode()).hexdigest(),
        "files": [_file_stamp(plate, w, s, c) for w, s in sample for c in channels],
        "settings": [statistic, WORKING_SIDE, FILTER_SIZE, ROBUST_PERCENTILE],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _file_stamp(plate: Plate, well: str, site: int, channel: Channel) -> list:
    """Name, size and modification time of a plane's file (its description otherwise)."""
    files = getattr(plate.source, "files", None)
    ref = files.get((well, site, channel.key)) if isinstance(files, dict) else None
    if ref is None or not hasattr(ref, "path"):
        try:
            return [plate.source.describe(well, site, channel)]
        except Exception:  # a missing plane is simply part of the fingerprint
            return [well, site, channel.key]
    try:
        stat = os.stat(ref.path)
    except OSError:
        return [str(ref.path), ref.page, None]
    return [Path(ref.path).name, ref.page, stat.st_size, stat.st_mtime_ns]


def user_cache_folder() -> Path:
    """Per-user cache folder of illumination functions (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "phenoadapt" / "illumination"


def is_writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or in its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def cache_paths(plate: Plate, key: str) -> list[Path]:
    """Where a plate's cache may be, in the order tried: the plate folder, the user cache."""
    paths = []
    if plate.path is not None:
        root = Path(plate.path)
        folder = root if root.is_dir() else root.parent
        paths.append(folder / PLATE_CACHE_FOLDER / f"illumination-{key[:24]}.npz")
    safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", plate.plate_id)[:60] or "plate"
    paths.append(user_cache_folder() / f"{safe_id}-{key[:24]}.npz")
    return paths


def load_cached(plate: Plate, key: str) -> Illumination | None:
    """The functions saved for ``key``, or None when none is saved (or it is unreadable)."""
    for path in cache_paths(plate, key):
        if path.is_file():
            loaded = read_npz(path, key, plate.field_shape)
            if loaded is not None:
                return loaded
    return None


def read_npz(path: Path, key: str, field_shape: Sequence[int]) -> Illumination | None:
    """Read a cache file without pickles; None when it is not a valid cache for ``key``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != CACHE_VERSION or str(data["key"]) != key:
                return None
            reduced = np.asarray(data["reduced"], dtype=np.float32)
            channels = tuple(str(c) for c in data["channels"])
            shape = tuple(int(s) for s in data["field_shape"])
            n_fields = int(data["n_fields"])
    except Exception as exc:  # a truncated or foreign file is recomputed, never trusted
        log.warning("ignoring unreadable illumination cache %s: %s", path, exc)
        return None
    if (
        shape != tuple(int(s) for s in field_shape)
        or reduced.ndim != 3
        or len(channels) != len(reduced)
        or not np.isfinite(reduced).all()
    ):
        return None
    return Illumination(channels, reduced, shape, n_fields, key, path=path, loaded=True)


def save_cached(plate: Plate, result: Illumination) -> Path | None:
    """Save the functions to the first writable cache location; None when none is."""
    for path in cache_paths(plate, result.key):
        if not is_writable(path.parent):
            continue
        try:
            write_npz(path, result)
        except OSError as exc:
            log.warning("cannot write illumination cache %s: %s", path, exc)
            continue
        return path
    return None


def write_npz(path: Path, result: Illumination) -> None:
    """Write a cache file atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(handle)
    try:
        np.savez(
            temp,
            version=np.int64(CACHE_VERSION),
            key=np.str_(result.key),
            channels=np.array(result.channels, dtype=np.str_),
            reduced=result.reduced.astype(np.float32),
            field_shape=np.array(result.field_shape, dtype=np.int64),
            n_fields=np.int64(result.n_fields),
        )
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
