"""Training data of a PhenoProfiler: images, treatment labels and morphology-profile targets.

Every image (a cell crop or a field tile) gets

- a **treatment class**: the compound at its dose (``"taxol@10"``), or the
  treatment alone, or the MoA (``class_by``).  Negative controls are a class
  too (``"DMSO@0"``): they are images of the plate like any other, and the
  embedding must place them well because corrections are computed from them.
- a **regression target**: the morphology profile of the image's *site* - the
  per-site median of the project's own per-cell measurements
  (:func:`phenoadapt.cells.aggregate_profiles` with ``level="site"``) - turned
  into a vector of the embedding's length by :class:`ProfileTargets`.

:class:`ProfileTargets` standardizes the profile features, reduces them by PCA
to the embedding dimension when they have more, and scales the result so the
average target dimension has unit variance (the scale of a LayerNorm output,
which is what the embedding is).  Standardization is either global (mean and
standard deviation of the training sites, as PhenoProfiler regresses onto raw
precomputed features) or per plate against the plate's negative controls
(``"plate-controls"``), which takes the plate's technical shift out of the
target itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from phenoadapt.errors import OptionError

from .. import schema
from ..adapt.embedding import control_zscore
from ..errors import PlateMapError, TableError
from ..profiles.table import feature_columns
from ._tables import channel_names_for, describe_wells, role_values, take_images

UNLABELLED = -1
CLASS_BY = ("treatment-dose", "treatment", "moa")
TARGET_NORMALIZATIONS = ("global", "plate-controls")
# Keys that join an image to its site's profile, finest first.
_SITE_KEYS = (schema.PLATE, schema.WELL, schema.SITE)


def class_names(table: pd.DataFrame, by: str = "treatment-dose") -> np.ndarray:
    """The treatment class of every row (None for excluded rows).

    Parameters
    ----------
    table
        Needs ``Metadata_Role`` and ``Metadata_Treatment`` (``Metadata_MoA`` for
        ``by="moa"``; ``Metadata_Concentration`` is used when present).
    by
        ``"treatment-dose"`` (``"<treatment>@<concentration>"``, the paper's
        compound-at-dose classes), ``"treatment"`` or ``"moa"``.

    Raises
    ------
    PlateMapError
        Missing columns or a non-excluded row without a treatment.
    """
    if by not in CLASS_BY:
        raise OptionError(f"Unknown class definition {by!r}: use one of {CLASS_BY}.")
    column = schema.MOA if by == "moa" else schema.TREATMENT
    if column not in table.columns:
        raise PlateMapError(
            f"The table lacks {column}: PhenoProfiler's classification head needs the "
            "treatment of every well from the plate map."
        )
    usable = role_values(table) != schema.Role.EXCLUDED.value
    values = table[column]
    missing = usable & (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    if missing.any():
        raise PlateMapError(
            f"{int(missing.sum())} rows have no {column} ({describe_wells(table, missing)}): "
            "give every control and treated well one in the plate map, or mark it excluded."
        )
    names = values.astype(str).to_numpy().astype(object)
    if by == "treatment-dose" and schema.CONCENTRATION in table.columns:
        conc = pd.to_numeric(table[schema.CONCENTRATION], errors="coerce").to_numpy()
        dosed = ~np.isnan(conc)
        names[dosed] = [f"{n}@{c:g}" for n, c in zip(names[dosed], conc[dosed], strict=True)]
    names[~usable] = None
    return names


@dataclass
class ProfileTargets:
    """Standardize, reduce and scale site profiles into regression targets.

    Use :meth:`fit` on the training sites, then :meth:`transform` on any sites.

    Attributes
    ----------
    dim
        Length of the targets (the embedding dimension).
    normalization
        ``"global"`` or ``"plate-controls"`` (see the module docstring).
    features
        Profile columns used (constant and all-missing columns are dropped).
    """

    dim: int
    normalization: str = "global"
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.normalization not in TARGET_NORMALIZATIONS:
            raise OptionError(
                f"Unknown target normalization {self.normalization!r}: use one of "
                f"{TARGET_NORMALIZATIONS}."
            )
        if self.dim < 1:
            raise OptionError(f"The target dimension must be >= 1, got {self.dim}.")

    # ------------------------------------------------------------------ fitting
    def _standardize(self, profiles: pd.DataFrame, fitting: bool) -> np.ndarray:
        X = profiles[list(self.features)].to_numpy(dtype=np.float64)
        # Missing values (a texture of a tiny object) become the training median.
        X = np.where(np.isnan(X), self.fill_[None, :], X)
        if self.normalization == "global":
            if fitting:
                self.mean_ = X.mean(axis=0)
                std = X.std(axis=0)
                self.std_ = np.where(std > 0, std, 1.0)
            return (X - self.mean_) / self.std_
        plates = profiles[schema.PLATE].astype(str).to_numpy()
        controls = role_values(profiles) == schema.Role.CONTROL.value
        return control_zscore(X, plates, controls)

    def fit(self, profiles: pd.DataFrame) -> ProfileTargets:
        """Learn standardization, PCA and scale from training site profiles.

        Raises
        ------
        TableError
            No usable feature, fewer features or profiles than ``dim``.
        """
        columns = list(self.features) or feature_columns(profiles)
        if not columns:
            raise TableError(
                "The profile table has no feature columns (Cells_*, Cytoplasm_*, Nuclei_*): "
                "make it with phenoadapt segment --per-site or cells.aggregate_profiles."
            )
        values = profiles[columns].to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        keep = finite.any(axis=0)
        spread = np.array(
            [np.ptp(v[f]) if f.any() else 0.0 for v, f in zip(values.T, finite.T, strict=True)]
        )
        keep &= spread > 0
        self.features = tuple(c for c, k in zip(columns, keep, strict=True) if k)
        if len(self.features) < self.dim:
            raise TableError(
                f"The profiles have {len(self.features)} usable features but the embedding has "
                f"{self.dim} dimensions: choose an embedding dimension of at most "
                f"{len(self.features)}."
            )
        if len(profiles) <= self.dim and len(self.features) > self.dim:
            raise TableError(
                f"{len(profiles)} training sites cannot define {self.dim} principal components: "
                "use more sites or a smaller embedding dimension."
            )
        kept = values[:, keep]
        self.fill_ = np.array([np.median(v[np.isfinite(v)]) for v in kept.T])
        z = self._standardize(profiles, fitting=True)
        self.pca_: PCA | None = None
        if z.shape[1] > self.dim:
            self.pca_ = PCA(n_components=self.dim, svd_solver="full").fit(z)
            reduced = self.pca_.transform(z)
        else:
            reduced = z
        variance = float(reduced.var(axis=0).mean())
        self.scale_ = 1.0 / np.sqrt(variance) if variance > 0 else 1.0
        return self

    def transform(self, profiles: pd.DataFrame) -> np.ndarray:
        """Targets ``(n, dim)`` float32 of site profiles (same columns as at fit)."""
        if not hasattr(self, "scale_"):
            raise RuntimeError("ProfileTargets.transform called before fit.")
        missing = [c for c in self.features if c not in profiles.columns]
        if missing:
            raise TableError(
                f"The profile table lacks {len(missing)} feature(s) the targets were fitted on "
                f"(e.g. {missing[:3]}): measure these plates with the same settings."
            )
        z = self._standardize(profiles, fitting=False)
        reduced = self.pca_.transform(z) if self.pca_ is not None else z
        return (reduced * self.scale_).astype(np.float32)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (stored in checkpoints)."""
        explained = None
        if getattr(self, "pca_", None) is not None:
            explained = float(self.pca_.explained_variance_ratio_.sum())
        return {
            "dim": self.dim,
            "normalization": self.normalization,
            "n_features": len(self.features),
            "pca": getattr(self, "pca_", None) is not None,
            "pca_explained_variance": explained,
            "scale": float(getattr(self, "scale_", 1.0)),
        }


def site_targets(
    table: pd.DataFrame, profiles: pd.DataFrame, targets: ProfileTargets
) -> np.ndarray:
    """The target vector of each row of ``table`` from its site's profile.

    Rows join profiles on plate, well and (when both tables have it) site.
    Rows of excluded wells get NaN and are never trained on.

    Raises
    ------
    TableError
        When a control or treated row has no profile, naming the wells.
    """
    keys = [k for k in _SITE_KEYS if k in table.columns and k in profiles.columns]
    if schema.PLATE not in keys or schema.WELL not in keys:
        raise TableError(
            f"Images and profiles must both have {schema.PLATE} and {schema.WELL} (and "
            f"{schema.SITE}) to match each image with its site's profile."
        )
    values = targets.transform(profiles)
    index = pd.MultiIndex.from_frame(_key_frame(profiles, keys))
    if index.has_duplicates:
        raise TableError(
            f"The profile table has several rows per {', '.join(keys)}: give one profile per site."
        )
    positions = index.get_indexer(pd.MultiIndex.from_frame(_key_frame(table, keys)))
    usable = role_values(table) != schema.Role.EXCLUDED.value
    lost = usable & (positions < 0)
    if lost.any():
        raise TableError(
            f"{int(lost.sum())} images have no site profile ({describe_wells(table, lost)}): "
            "measure every imaged site, or leave those images out."
        )
    out = np.full((len(table), targets.dim), np.nan, dtype=np.float32)
    out[positions >= 0] = values[positions[positions >= 0]]
    return out


def _key_frame(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    frame = table[list(keys)].copy()
    for key in keys:
        frame[key] = frame[key].astype(int) if key == schema.SITE else frame[key].astype(str)
    return frame


@dataclass
class EmbedderData:
    """Images with their table, treatment classes, labels and profile targets.

    Attributes
    ----------
    images
        ``(n, C, h, w)`` raw intensities (crops or tiles).
    table
        One row per image: ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_Site``, ``Metadata_Role``, ``Metadata_Treatment``...
    classes
        Treatment class names; label ``k`` means ``classes[k]``.
    labels
        ``(n,)`` class index, -1 for excluded rows (never trained on).
    targets
        ``(n, dim)`` float32 regression targets (NaN for excluded rows).
    channel_names
        Image channel names, in order.
    """

    images: np.ndarray | torch.Tensor
    table: pd.DataFrame
    classes: tuple[str, ...]
    labels: np.ndarray
    targets: np.ndarray
    channel_names: tuple[str, ...] = ()

    @classmethod
    def from_tables(
        cls,
        images: np.ndarray | torch.Tensor,
        table: pd.DataFrame,
        profiles: pd.DataFrame,
        targets: ProfileTargets,
        *,
        classes: Sequence[str] | None = None,
        class_by: str = "treatment-dose",
        channel_names: Sequence[str] | None = None,
    ) -> EmbedderData:
        """Build from images, their table and site profiles.

        Parameters
        ----------
        images
            One image per table row.
        table
            Per-image metadata (a per-cell table for crops, a per-site table
            for tiles).
        profiles
            Site profiles (``level="site"`` of :func:`phenoadapt.cells.aggregate_profiles`).
        targets
            A fitted :class:`ProfileTargets`, or an unfitted one, which is then
            fitted on the sites of ``profiles`` that have images.
        classes
            Class order; None = the sorted classes of the table.
        class_by
            See :func:`class_names`.
        channel_names
            Channel names; None = ``ch1``, ``ch2``...
        """
        if int(images.shape[0]) != len(table):
            raise ValueError(f"{int(images.shape[0])} images for {len(table)} table rows.")
        table = table.reset_index(drop=True)
        names = class_names(table, class_by)
        usable = np.array([n is not None for n in names])
        if not usable.any():
            raise PlateMapError("Every image is in an excluded well: nothing to train on.")
        if classes is None:
            classes = sorted({str(n) for n in names[usable]})
        classes = tuple(str(c) for c in classes)
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = usable & ~np.isin(names.astype(str), classes)
        if unknown.any():
            raise PlateMapError(
                f"Images have classes {sorted(set(names[unknown]))} outside {list(classes)} "
                f"({describe_wells(table, unknown)})."
            )
        labels = np.full(len(table), UNLABELLED, dtype=np.int64)
        labels[usable] = [lookup[str(n)] for n in names[usable]]
        if not hasattr(targets, "scale_"):
            targets.fit(_sites_with_images(profiles, table))
        values = site_targets(table, profiles, targets)
        channels = channel_names_for(channel_names, int(images.shape[1]), "images")
        return cls(images, table, classes, labels, values, channels)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def plates(self) -> list[str]:
        """Plate names, sorted."""
        return sorted(self.table[schema.PLATE].astype(str).unique())

    @property
    def usable(self) -> np.ndarray:
        """Positions of the images that are trained on (not excluded)."""
        return np.flatnonzero(self.labels >= 0)

    def subset(self, plates: Sequence[str]) -> EmbedderData:
        """The images of some plates."""
        keep = self.table[schema.PLATE].astype(str).isin([str(p) for p in plates]).to_numpy()
        return self.take(np.flatnonzero(keep))

    def take(self, positions: np.ndarray) -> EmbedderData:
        """The images at ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        images = take_images(self.images, positions)
        return EmbedderData(
            images, self.table.iloc[positions].reset_index(drop=True), self.classes,
            self.labels[positions], self.targets[positions], self.channel_names,
        )  # fmt: skip

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (float32), labels and targets of ``positions`` as CPU tensors."""
        positions = np.asarray(positions, dtype=np.int64)
        if isinstance(self.images, torch.Tensor):
            x = self.images[torch.as_tensor(positions, device=self.images.device)].float().cpu()
        else:
            x = torch.from_numpy(
                np.ascontiguousarray(np.asarray(self.images)[positions], np.float32)
            )
        return x, torch.as_tensor(self.labels[positions]), torch.from_numpy(self.targets[positions])


def _sites_with_images(profiles: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Profiles of the sites (of plates) that the images come from."""
    keys = [k for k in _SITE_KEYS if k in table.columns and k in profiles.columns]
    wanted = pd.MultiIndex.from_frame(_key_frame(table, keys).drop_duplicates())
    have = pd.MultiIndex.from_frame(_key_frame(profiles, keys))
    rows = profiles[have.isin(wanted)]
    if schema.ROLE in rows.columns:
        rows = rows[rows[schema.ROLE].astype(str).str.lower() != schema.Role.EXCLUDED.value]
    if rows.empty:
        raise TableError("No profile matches the images' plates, wells and sites.")
    return rows.reset_index(drop=True)
