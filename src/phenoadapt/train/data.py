"""Training data: crops, their cell table and integer labels, split by plate.

:class:`CellData` ties a crop array to its per-cell table (row ``i`` of the table
describes crop ``i``) and turns the MoA of treated cells into class indices.
Controls and excluded cells get label -1: controls enter CS-ARM-BN episodes
unlabelled, excluded cells are never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import schema
from ..errors import PlateMapError
from ._tables import channel_names_for, describe_wells, role_values, take_images

UNLABELLED = -1


@dataclass
class CellData:
    """Crops with their table, class list and labels.

    Attributes
    ----------
    images
        ``(n, C, h, w)`` raw intensities (numpy, numpy memmap or torch tensor).
    table
        Per-cell table with ``Metadata_Plate``, ``Metadata_Role``, ``Metadata_MoA``.
    classes
        Class names; label ``k`` means ``classes[k]``.
    labels
        ``(n,)`` int64 class index of treated cells, -1 for controls and excluded.
    channel_names
        Names of the image channels, in order (stored in checkpoints).
    """

    images: np.ndarray | torch.Tensor
    table: pd.DataFrame
    classes: tuple[str, ...]
    labels: np.ndarray
    channel_names: tuple[str, ...] = ()

    @classmethod
    def from_table(
        cls,
        images: np.ndarray | torch.Tensor,
        table: pd.DataFrame,
        classes: Sequence[str] | None = None,
        channel_names: Sequence[str] | None = None,
    ) -> CellData:
        """Build from crops and a per-cell table.

        Parameters
        ----------
        images
            Crops, one per table row.
        table
            Needs ``Metadata_Plate``, ``Metadata_Role`` and, for treated cells,
            ``Metadata_MoA``.  The index is reset (positions are what counts).
        classes
            Class order; None = the sorted MoAs of the treated cells.
        channel_names
            Channel names; None = ``ch1``, ``ch2``...

        Raises
        ------
        PlateMapError
            Missing columns, treated cells without an MoA or with an MoA outside
            ``classes``.
        """
        missing = [c for c in (schema.PLATE, schema.ROLE, schema.MOA) if c not in table.columns]
        if missing:
            raise PlateMapError(
                f"The cell table lacks column(s) {missing}: training needs the plate, the well "
                "role (control/treated) and the MoA of treated wells from the plate map."
            )
        if int(images.shape[0]) != len(table):
            raise ValueError(f"{int(images.shape[0])} crops for {len(table)} table rows.")
        table = table.reset_index(drop=True)
        roles = role_values(table)
        treated = roles == schema.Role.TREATED.value
        moa = table[schema.MOA]
        no_moa = treated & (moa.isna() | (moa.astype(str).str.strip() == "")).to_numpy()
        if no_moa.any():
            wells = describe_wells(table, no_moa)
            raise PlateMapError(
                f"{int(no_moa.sum())} treated cells have no {schema.MOA} ({wells}): give every "
                "treated well an MoA in the plate map, or mark it excluded."
            )
        names = moa.astype(str).to_numpy()
        if classes is None:
            classes = sorted(set(names[treated]))
        classes = tuple(str(c) for c in classes)
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = treated & ~np.isin(names, classes)
        if unknown.any():
            raise PlateMapError(
                f"Treated cells have MoAs {sorted(set(names[unknown]))} that are not among the "
                f"classes {list(classes)} ({describe_wells(table, unknown)})."
            )
        labels = np.full(len(table), UNLABELLED, dtype=np.int64)
        labels[treated] = [lookup[m] for m in names[treated]]
        channels = channel_names_for(channel_names, int(images.shape[1]), "crops")
        return cls(images, table, classes, labels, channels)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def plates(self) -> list[str]:
        """Plate names, sorted."""
        return sorted(self.table[schema.PLATE].astype(str).unique())

    @property
    def roles(self) -> np.ndarray:
        """Role of each cell (``"control"``, ``"treated"``, ``"excluded"``)."""
        return role_values(self.table)

    def subset(self, plates: Sequence[str]) -> CellData:
        """The cells of some plates (images are indexed, so a copy for numpy arrays)."""
        keep = np.flatnonzero(self.table[schema.PLATE].astype(str).isin([str(p) for p in plates]))
        return self.take(keep)

    def take(self, positions: np.ndarray) -> CellData:
        """The cells at ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        images = take_images(self.images, positions)
        table = self.table.iloc[positions].reset_index(drop=True)
        return CellData(images, table, self.classes, self.labels[positions], self.channel_names)

    def batch(self, positions: np.ndarray) -> torch.Tensor:
        """Float32 tensor of the crops at ``positions`` (on the images' device)."""
        positions = np.asarray(positions, dtype=np.int64)
        if isinstance(self.images, torch.Tensor):
            idx = torch.as_tensor(positions, device=self.images.device)
            return self.images[idx].float()
        return torch.from_numpy(
            np.ascontiguousarray(np.asarray(self.images)[positions], np.float32)
        )


def split_plates(
    plates: Sequence[str], n_validation: int = 1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Random split of plates into training and held-out validation plates.

    Returns
    -------
    (training, validation)
        Sorted plate lists; at least one training plate.
    """
    plates = sorted(str(p) for p in set(plates))
    if not 0 <= n_validation < len(plates):
        raise ValueError(
            f"Cannot hold out {n_validation} of {len(plates)} plates: "
            "keep at least one for training."
        )
    rng = np.random.default_rng(seed)
    held = (
        set(rng.choice(plates, size=n_validation, replace=False).tolist())
        if n_validation
        else set()
    )
    return [p for p in plates if p not in held], [p for p in plates if p in held]
