"""What a model takes from a plate, cut once for prediction and embedding alike.

A checkpoint's model-input contract (:class:`phenoadapt.model_input.ModelInput`)
says whether it takes a crop per segmented cell or a tile per field, and of
what size, scale and channels; :func:`plate_inputs` is the one place that reads
a plate accordingly.  The plate contexts, the device, AMP and out-of-memory
handling of the network passes that follow live in
:mod:`phenoadapt.adapt.methods` (:class:`~phenoadapt.adapt.methods.ContextSpec`,
:class:`~phenoadapt.adapt.methods.Runtime`,
:func:`~phenoadapt.adapt.methods.run_contexts`): training validates with them
too, and it sits below this package.  :func:`unadapted_features` and
:func:`embed_contexts` are the network passes that prediction, embedding and
their dask tasks (:mod:`.context_tasks`) share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..adapt.methods import Context, Runtime, run_contexts
from ..cells.params import SegmentationParams
from ..model_input import ModelInput
from ..nn.runtime import forward_in_batches, iter_batches
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn, check_cancel
from ..train.augment import center_crop
from .crops import PlateCrops, checkpoint_crop_params, plate_crops
from .tiles import checkpoint_tiles, plate_tiles


def plate_inputs(
    plate: Plate,
    contract: ModelInput,
    *,
    platemap: Any | None = None,
    segmentation: SegmentationParams | None = None,
    wells: Sequence[str] | None = None,
    cells: pd.DataFrame | None = None,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    scheduler: Any | None = None,
) -> PlateCrops:
    """What the model takes from a plate: a crop per cell, or a tile per field.

    Parameters
    ----------
    plate
        The plate.
    contract
        The checkpoint's model-input contract (``metadata.model_input``).
    platemap
        Plate map giving role, treatment, MoA and concentration.
    segmentation
        Cell models: how cells are found (None: the contract's, else defaults).
    wells
        Restrict to these wells.
    cells
        Cell models: a per-cell table whose centroids are cropped instead of segmenting.
    batch_size
        Crops gathered per step of the crop stream.
    progress, cancel
        ``progress(stage, done, total)`` per field; ``cancel()`` polled before each.
    scheduler
        Cell models: a dask scheduler for the fields (see :func:`.crops.plate_crops`);
        tiles are read here.

    Raises
    ------
    ModelError
        Channels the plate lacks, or no recorded crop or tile size.
    CellsError
        No cell (or no readable field) on the plate.
    """
    if contract.unit == "site":
        channels, size = checkpoint_tiles(contract, plate)
        return plate_tiles(
            plate, channels, size, platemap=platemap, wells=wells, progress=progress,
            cancel=cancel,
        )  # fmt: skip
    return plate_crops(
        plate, checkpoint_crop_params(contract, plate), platemap=platemap,
        segmentation=segmentation or contract.segmentation_or_default(), wells=wells,
        cells=cells, batch_size=batch_size, progress=progress, cancel=cancel,
        scheduler=scheduler,
    )  # fmt: skip


def unadapted_features(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    input_size: int | None,
    batch_size: int,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> np.ndarray:
    """Pooled features with the training running statistics, reported as stage ``predict``."""
    device = next(iter(model.parameters())).device
    model.eval()
    parts = []
    slices = list(iter_batches(len(rows), batch_size))
    for i, sl in enumerate(slices):
        check_cancel(cancel, "Prediction")
        batch = torch.from_numpy(np.ascontiguousarray(images[rows[sl]], dtype=np.float32))
        (out,) = forward_in_batches(
            lambda x: model.embed(center_crop(x, input_size)), batch, batch_size=batch_size,
            device=device, cancel=cancel,
        )  # fmt: skip
        parts.append(out.numpy())
        if progress is not None:
            progress("predict", i + 1, len(slices))
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


class EmbedRunner(Protocol):
    """Embeds a plate's planned contexts: the signature of :func:`embed_contexts`.

    In this process :func:`embed_contexts` itself; on a cluster
    :meth:`phenoadapt.pipeline.context_tasks.ClusterNetwork.embedder` (dask tasks),
    which returns the same arrays in the same order.
    """

    def __call__(
        self,
        model: nn.Module,
        images: np.ndarray | torch.Tensor,
        contexts: Sequence[Context],
        *,
        input_size: int | None = None,
        runtime: Runtime,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> list[np.ndarray]: ...


def embed_contexts(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    contexts: Sequence[Context],
    *,
    input_size: int | None = None,
    runtime: Runtime,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[np.ndarray]:
    """Embeddings of each context's ``predict`` cells under that context's statistics.

    The one loop behind plate-context embeddings (:func:`.embed.image_embeddings`),
    in this process and on dask workers (:mod:`.context_tasks` runs it on each
    context's own rows).

    Parameters
    ----------
    model
        A PhenoProfiler, run on the device it is on and left as it was.
    images
        ``(n, C, h, w)`` raw intensities; context positions index its first axis.
    contexts
        Planned contexts (:meth:`~phenoadapt.adapt.methods.ContextSpec.plan`).
    input_size
        Centre crop applied to every image first.
    runtime
        Batch size, pass size, AMP and channels-last (its device is ignored).
    progress, cancel
        ``progress("embed", done, total)`` after each context; ``cancel()`` polled.

    Returns
    -------
    list of numpy.ndarray
        Per context, ``(len(context.predict), d)`` float32 embeddings.
    """

    def head(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (m.embed(center_crop(x, input_size)),)

    return [
        out.numpy()
        for _ctx, ((out,),) in run_contexts(
            [model],
            images,
            contexts,
            head,
            runtime,
            stage="embed",
            progress=progress,
            cancel=cancel,
        )  # fmt: skip
    ]
