"""Fixed-size multi-channel crops centred on cells, and a lazy stream of them over a plate.

A crop is a ``(channel, size, size)`` float32 window of raw intensities centred
on a cell's nucleus (the ``centroid_y``/``centroid_x`` of the per-cell table,
which always lies inside the cell).  Options:

- ``scale``: resample the field before cropping (0.5 halves the resolution, so
  a 64-pixel crop covers 128 field pixels);
- ``border``: a cell whose window crosses the field's edge is either kept with
  the missing part filled with zeros (``"pad"``: no signal, the value masked
  neighbours get too) or dropped (``"skip"``: every crop shows only real pixels,
  at the cost of losing edge cells, which biases against large cells);
- ``mask_neighbours``: set pixels of other cells to zero so that only the
  centred cell and the background remain.

:class:`CropStream` walks a plate field by field and yields batches of crops
with their per-cell rows; it holds one field and one batch at a time, never the
plate.  Given a ``scheduler`` its fields are segmented and cropped as dask tasks
(:mod:`phenoadapt.scale`) and handed back in plate order, so the batches are the
same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from skimage.transform import resize

from .. import schema
from ..errors import Cancelled, CellsError, PhenoadaptError
from ..plate.channels import CELL_PAINTING_ROLES, Channel, ChannelRole
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn
from .measure import measure_cells
from .params import MeasureParams, SegmentationParams
from .process import FieldFailure, field_name
from .segment import find_channel, segment_field
from .table import cell_table

BORDER_MODES = ("pad", "skip")


@dataclass(frozen=True)
class CropParams:
    """How crops are cut.

    Parameters
    ----------
    size
        Side of the output crop in pixels.
    scale
        Resampling factor applied before cropping (1: native resolution; 0.5:
        half resolution, so the crop covers ``size / scale`` field pixels).
    border
        ``"pad"`` (zero-fill outside the field) or ``"skip"`` (drop edge cells).
    mask_neighbours
        Zero the pixels of other segmented cells.
    channels
        Names or roles of the channels to crop, in output order.  Default: the
        Cell Painting roles the field has, in model order (DNA, ER, RNA, AGP,
        Mito), or every non-brightfield channel when none has a role.
    """

    size: int = 96
    scale: float = 1.0
    border: str = "pad"
    mask_neighbours: bool = False
    channels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 4:
            raise CellsError(f"Crop size {self.size!r} must be a whole number of pixels >= 4.")
        if not self.scale > 0 or self.scale > 8:
            raise CellsError(f"Crop scale {self.scale!r} must lie in (0, 8].")
        if self.border not in BORDER_MODES:
            raise CellsError(f"Unknown border mode {self.border!r}: use 'pad' or 'skip'.")

    @property
    def window(self) -> int:
        """Side of the window cut from the field, in field pixels."""
        return max(1, int(round(self.size / self.scale)))


def crop_channels(
    channels: Sequence[Channel], params: CropParams, field_name: str = "the field"
) -> list[int]:
    """Positions of the channels to crop, in output order."""
    if params.channels is not None:
        return [find_channel(channels, c, field_name) for c in params.channels]
    by_role = {c.role: i for i, c in enumerate(channels)}
    chosen = [by_role[r] for r in CELL_PAINTING_ROLES if r in by_role]
    return chosen or [i for i, c in enumerate(channels) if c.role is not ChannelRole.BRIGHTFIELD]


def extract_crops(
    image: np.ndarray,
    centroids: np.ndarray,
    params: CropParams | None = None,
    labels: np.ndarray | None = None,
    cell_ids: Sequence[int] | None = None,
    field_name: str = "the field",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut one crop per cell from a field.

    Parameters
    ----------
    image
        (channel, y, x) array: the channels to crop, already selected.
    centroids
        (n, 2) array of (y, x) centres.
    params
        Crop parameters.
    labels, cell_ids
        Cell labels of the field and the label of each centroid; needed only
        with ``mask_neighbours``.
    field_name
        Name of the field in error messages.

    Returns
    -------
    (crops, kept)
        ``crops`` is float32 ``(k, channel, size, size)``; ``kept`` is a boolean
        array over the n centroids telling which got a crop (all of them with
        ``border="pad"``).
    """
    params = params or CropParams()
    image = np.asarray(image)
    centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
    height, width = image.shape[1:]
    w = params.window
    if w > min(height, width):
        raise CellsError(
            f"{field_name}: a crop of {params.size} pixels at scale {params.scale:g} needs a "
            f"{w}x{w} window, larger than the {height}x{width} field. Use a smaller size or scale."
        )
    if params.mask_neighbours and (labels is None or cell_ids is None):
        raise CellsError("mask_neighbours needs the cell labels and the cell id of each centroid.")
    outside = ~(
        (centroids[:, 0] >= -0.5) & (centroids[:, 0] <= height - 0.5)
        & (centroids[:, 1] >= -0.5) & (centroids[:, 1] <= width - 0.5)
    )  # fmt: skip
    if outside.any():
        # A cell table made for another field (or image size) would give windows of padding.
        y, x = centroids[np.flatnonzero(outside)[0]]
        raise CellsError(
            f"{field_name}: {int(outside.sum())} cell centroid(s) lie outside the "
            f"{height}x{width} field, e.g. ({y:g}, {x:g}). Check that the cell table belongs to "
            "this plate and was made at the same image scale."
        )
    top = np.round(centroids[:, 0]).astype(np.int64) - w // 2
    left = np.round(centroids[:, 1]).astype(np.int64) - w // 2
    inside = (top >= 0) & (left >= 0) & (top + w <= height) & (left + w <= width)
    kept = inside if params.border == "skip" else np.ones(len(centroids), dtype=bool)
    # Padding by a full window makes every window index valid.
    padded = np.pad(image.astype(np.float32, copy=False), ((0, 0), (w, w), (w, w)))
    padded_labels = np.pad(labels, w) if params.mask_neighbours else None
    crops = np.empty((int(kept.sum()), image.shape[0], w, w), dtype=np.float32)
    for out, i in enumerate(np.flatnonzero(kept)):
        ys = slice(top[i] + w, top[i] + 2 * w)
        xs = slice(left[i] + w, left[i] + 2 * w)
        crops[out] = padded[:, ys, xs]
        if padded_labels is not None:
            window = padded_labels[ys, xs]
            crops[out][:, (window != 0) & (window != cell_ids[i])] = 0
    if w != params.size and len(crops):
        crops = resize(
            crops,
            (len(crops), image.shape[0], params.size, params.size),
            order=1,
            preserve_range=True,
            anti_aliasing=w > params.size,
        ).astype(np.float32)
    return crops, kept


@dataclass
class CropBatch:
    """A batch of crops and the per-cell rows they belong to (same order)."""

    crops: np.ndarray
    cells: pd.DataFrame

    def __len__(self) -> int:
        return len(self.crops)


@dataclass
class CropStream:
    """Lazy batches of cell crops over a plate.

    Iterating segments one field at a time (or takes its cells from ``cells``)
    and yields :class:`CropBatch` objects of ``batch_size`` crops (the last may
    be smaller).  Fields that fail are skipped and recorded in ``failures``.

    Parameters
    ----------
    plate
        The plate.
    wells
        Restrict to these wells; all imaged wells when None.
    fields
        Explicit (well, site) pairs, overriding ``wells``.
    batch_size
        Crops per batch.
    crop, segmentation
        Crop and segmentation parameters.
    measure
        When given, the rows carry these measurements too (slower).
    platemap
        Optional plate map for role, treatment and MoA columns.
    cells
        A per-cell table made earlier (``phenoadapt segment``): crops are cut
        at its centroids and nothing is segmented.  Incompatible with
        ``mask_neighbours``, which needs the labels.
    progress, cancel
        ``progress("crops", done_fields, total_fields)``; ``cancel()`` polled
        between fields, raising :class:`~phenoadapt.errors.Cancelled`.
    scheduler
        None: fields are cropped in this process, one after the other.
        Otherwise a dask scheduler (see :func:`phenoadapt.scale.open_scheduler`):
        fields run as tasks, progress follows completed tasks and the batches
        come in plate order, as without one.
    """

    plate: Plate
    wells: Sequence[str] | None = None
    fields: Sequence[tuple[str, int]] | None = None
    batch_size: int = 256
    crop: CropParams = field(default_factory=CropParams)
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    measure: MeasureParams | None = None
    platemap: Any | None = None
    cells: pd.DataFrame | None = None
    progress: ProgressFn | None = None
    cancel: CancelFn | None = None
    scheduler: Any | None = None
    failures: list[FieldFailure] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise CellsError(f"batch_size={self.batch_size} must be at least 1.")
        if self.cells is not None and self.crop.mask_neighbours:
            raise CellsError(
                "mask_neighbours needs cell labels, which a saved cell table does not have: "
                "crop without a table (cells are segmented on the fly) or without masking."
            )

    def field_list(self) -> list[tuple[str, int]]:
        """The (well, site) pairs this stream visits, in order."""
        if self.fields is not None:
            return [(str(w), int(s)) for w, s in self.fields]
        return list(self.plate.fields(self.wells))

    def __iter__(self) -> Iterator[CropBatch]:
        self.failures = []
        crops_buffer: list[np.ndarray] = []
        rows_buffer: list[pd.DataFrame] = []
        buffered = 0
        for outcome in self._outcomes(self.field_list()):
            if isinstance(outcome, FieldFailure):
                self.failures.append(outcome)
                continue
            crops, rows = outcome
            if not len(crops):
                continue
            crops_buffer.append(crops)
            rows_buffer.append(rows)
            buffered += len(crops)
            while buffered >= self.batch_size:
                batch, crops_buffer, rows_buffer = _take(crops_buffer, rows_buffer, self.batch_size)
                buffered -= self.batch_size
                yield batch
        if buffered:
            yield _take(crops_buffer, rows_buffer, buffered)[0]

    def _outcomes(self, fields: list[tuple[str, int]]) -> Iterator[FieldOutcome]:
        """Each field's crops and rows (or its failure), in plate order."""
        if self.scheduler is not None:
            yield from self._dask_outcomes(fields)
            return
        for done, (well, site) in enumerate(fields):
            self._check_cancel(done, len(fields))
            outcome = self.field_outcome(well, site)
            if self.progress is not None:
                self.progress("crops", done + 1, len(fields))
            yield outcome

    def _check_cancel(self, done: int, total: int) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled(
                f"Cropping of plate {self.plate.plate_id} cancelled after {done} of {total} fields."
            )

    def field_outcome(self, well: str, site: int) -> FieldOutcome:
        """:meth:`field_crops`, or the field's failure when it cannot be cropped."""
        try:
            return self.field_crops(well, site)
        except PhenoadaptError as exc:
            return FieldFailure(well, site, str(exc))

    def _dask_outcomes(self, fields: list[tuple[str, int]]) -> Iterator[FieldOutcome]:
        from ..scale import map_ordered, open_scheduler

        done = 0

        def finished(n: int) -> None:
            nonlocal done
            done += n
            if self.progress is not None:
                self.progress("crops", done, len(fields))

        # What the workers get: the stream without its hooks (closures do not pickle).
        shared = replace(self, progress=None, cancel=None, scheduler=None)
        with open_scheduler(self.scheduler) as client:
            tasks = map_ordered(
                client, _crop_chunk, shared, fields, name=f"crops-{self.plate.plate_id}",
                on_done=finished, poll=lambda: self._check_cancel(done, len(fields)),
            )  # fmt: skip
            for _chunk, outcomes, error in tasks:
                if error is not None:
                    # As without a scheduler, an error that is not the plate's is a bug to show.
                    raise error
                yield from outcomes

    def field_crops(self, well: str, site: int) -> tuple[np.ndarray, pd.DataFrame]:
        """Crops and per-cell rows of one field."""
        name = field_name(self.plate, well, site)
        image = self.plate.read_field(well, site)
        chosen = crop_channels(self.plate.channels, self.crop, name)
        if self.cells is not None:
            rows = self._saved_rows(well, site)
            labels = ids = None
        else:
            seg = segment_field(image, self.plate.channels, self.segmentation, field_name=name)
            if self.measure is not None:
                values = measure_cells(image, self.plate.channels, seg, self.measure, name)
            else:
                values = _centres(seg.nuclei, seg.n_cells)
            rows = cell_table(values, self.plate.plate_id, well, site, self.platemap)
            labels, ids = seg.cells, rows[schema.CELL_ID].to_numpy()
        centroids = rows[[schema.CENTROID_Y, schema.CENTROID_X]].to_numpy()
        crops, kept = extract_crops(image[chosen], centroids, self.crop, labels, ids, name)
        return crops, rows[kept].reset_index(drop=True)

    def _saved_rows(self, well: str, site: int) -> pd.DataFrame:
        table = self.cells
        match = (table[schema.WELL] == well) & (table[schema.SITE].astype(int) == site)
        if schema.PLATE in table.columns:
            match &= table[schema.PLATE].astype(str) == str(self.plate.plate_id)
        return table[match].reset_index(drop=True)


#: A field's crops and per-cell rows, or why it failed.
FieldOutcome = tuple[np.ndarray, pd.DataFrame] | FieldFailure


def _crop_chunk(stream: CropStream, chunk: list[tuple[str, int]]) -> list[FieldOutcome]:
    """A dask task: the outcomes of some fields (module level, so workers import it)."""
    return [stream.field_outcome(well, site) for well, site in chunk]


def _centres(nuclei: np.ndarray, n: int) -> pd.DataFrame:
    """cell_id and nucleus centres only (no measurements)."""
    from scipy import ndimage as ndi

    ids = np.arange(1, n + 1)
    centres = np.array(ndi.center_of_mass(np.ones(nuclei.shape), nuclei, ids)).reshape(-1, 2)
    return pd.DataFrame(
        {
            schema.CELL_ID: ids,
            schema.CENTROID_Y: centres[:, 0],
            schema.CENTROID_X: centres[:, 1],
        }
    )


def _take(
    crops: list[np.ndarray], rows: list[pd.DataFrame], n: int
) -> tuple[CropBatch, list[np.ndarray], list[pd.DataFrame]]:
    """Split the first ``n`` crops (and rows) off the buffers."""
    all_crops = np.concatenate(crops) if len(crops) > 1 else crops[0]
    all_rows = pd.concat(rows, ignore_index=True) if len(rows) > 1 else rows[0]
    batch = CropBatch(all_crops[:n], all_rows.iloc[:n].reset_index(drop=True))
    rest_crops = [all_crops[n:]] if len(all_crops) > n else []
    rest_rows = [all_rows.iloc[n:].reset_index(drop=True)] if len(all_rows) > n else []
    return batch, rest_crops, rest_rows
