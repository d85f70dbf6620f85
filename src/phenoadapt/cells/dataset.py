"""A torch ``IterableDataset`` of cell crops streamed from a plate.

Each item is already a batch (``{"crops": tensor (n, C, size, size), "cells":
DataFrame}``), so use it with ``DataLoader(dataset, batch_size=None)``.  With
several DataLoader workers the plate's fields are dealt out round-robin, so
each field is read and segmented by exactly one worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .crops import CropStream


class CellCropDataset(IterableDataset):
    """Batches of crops over a plate, for a torch ``DataLoader``.

    Parameters
    ----------
    plate
        The plate.
    **stream_options
        Any option of :class:`~phenoadapt.cells.crops.CropStream` (``wells``,
        ``fields``, ``batch_size``, ``crop``, ``segmentation``, ``measure``,
        ``platemap``, ``cells``).

    Examples
    --------
    >>> loader = DataLoader(CellCropDataset(plate, batch_size=128), batch_size=None)
    >>> for batch in loader:
    ...     embeddings = model(batch["crops"])
    """

    def __init__(self, plate: Any, **stream_options: Any) -> None:
        super().__init__()
        self.stream = CropStream(plate, **stream_options)

    def worker_fields(self) -> list[tuple[str, int]]:
        """The fields this DataLoader worker (or the main process) handles."""
        fields = self.stream.field_list()
        info = get_worker_info()
        if info is None:
            return fields
        return fields[info.id :: info.num_workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stream = CropStream(**_stream_kwargs(self.stream, self.worker_fields()))
        for batch in stream:
            yield {"crops": torch.from_numpy(batch.crops), "cells": batch.cells}


def _stream_kwargs(stream: CropStream, fields: list[tuple[str, int]]) -> dict[str, Any]:
    """Constructor arguments of a copy of ``stream`` restricted to ``fields``."""
    return {
        "plate": stream.plate,
        "fields": fields,
        "batch_size": stream.batch_size,
        "crop": stream.crop,
        "segmentation": stream.segmentation,
        "measure": stream.measure,
        "platemap": stream.platemap,
        "cells": stream.cells,
    }
