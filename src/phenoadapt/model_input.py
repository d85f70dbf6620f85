"""What a trained model takes as input: the one model-input contract, and a plate's fit to it.

A checkpoint's network only makes sense with the inputs it was trained on:
which stains in which order, one crop per segmented cell or one tile per
field, the crop or tile side, the resampling before cropping, the centre crop
at test time, the input normalization, the segmentation that found the cells,
and the classes of its outputs.  :class:`ModelInput` says all of that in one
typed, frozen record.  Training writes it into the checkpoint
(:mod:`phenoadapt.train.checkpoint`, format 2); prediction, embedding, the CLI
and the GUI read it from there and nothing else.

Checkpoints of format 1 kept these settings as free-form notes
(``metadata.extra``: ``unit``, ``tile_size``, ``crop_scale``,
``segmentation``) next to the crop size; :func:`legacy_model_input` is the one
conversion of such metadata.  :func:`match_channels` maps a plate's channels
onto a model's.

This module sits below training and prediction: it imports nothing from
``train``, ``pipeline``, ``embed`` or ``gui``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol

from .cells.params import SegmentationParams
from .errors import ModelError, PhenoadaptError
from .plate.channels import Channel, ChannelRole, role_from_name

#: The two units a model can be trained on: one crop per cell, one tile per field.
UNITS = ("cell", "site")


@dataclass(frozen=True)
class InputChannel:
    """One channel a model takes: the name stored in the checkpoint and its stain role."""

    name: str
    role: ChannelRole

    @classmethod
    def named(cls, name: str) -> InputChannel:
        """The channel of a checkpoint name, its role read from the name (``DNA`` -> DNA)."""
        return cls(str(name), role_from_name(str(name)))


@dataclass(frozen=True)
class ModelInput:
    """The model-input contract of a checkpoint.

    Attributes
    ----------
    channels
        The channels the network takes, in its order, with their stain roles.
    classes
        Class names in the order of the outputs.
    unit
        ``"cell"``: one crop per segmented cell; ``"site"``: one tile per field
        (the whole field resized, nothing segmented).
    size
        Side in pixels of the images the network is given: the crop size for
        cells, the tile size for sites; None when the checkpoint records none.
    input_size
        Centre crop applied at test time (random crop of this size in
        training); None when images are used whole.
    crop_scale
        Resampling of the field before crops are cut (cells only; 1 = as imaged).
    normalization
        Description of the per-channel input normalization the network's first
        module applies (a copy of the network spec's ``normalization``).
    segmentation
        Segmentation the training cells were found with (cells only); None:
        not recorded, prediction uses the defaults.
    """

    channels: tuple[InputChannel, ...]
    classes: tuple[str, ...]
    unit: str = "cell"
    size: int | None = None
    input_size: int | None = None
    crop_scale: float = 1.0
    normalization: dict[str, Any] | None = None
    segmentation: SegmentationParams | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ModelError(
                f"The checkpoint was trained on unit {self.unit!r}, which this version does not "
                f"know (known: {', '.join(UNITS)}): update phenoadapt."
            )

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Channel names in the network's order."""
        return tuple(c.name for c in self.channels)

    @property
    def crop_size(self) -> int | None:
        """Side of the crops cut around each cell (None for a site model)."""
        return self.size if self.unit == "cell" else None

    @property
    def tile_size(self) -> int | None:
        """Side of the tile each field is resized to (None for a cell model)."""
        return self.size if self.unit == "site" else None

    def image_size(self) -> int:
        """The crop (cells) or tile (sites) side; :class:`ModelError` when none is recorded."""
        if self.size:
            return int(self.size)
        if self.unit == "site":
            raise ModelError(
                "The site checkpoint records no tile size (metadata tile_size / crop_size): "
                "retrain it with phenoadapt train --unit site."
            )
        raise ModelError(
            "The checkpoint records no crop size (metadata crop_size), so the pipeline cannot "
            "tell what crops it expects: retrain it with phenoadapt train."
        )

    def segmentation_or_default(self) -> SegmentationParams:
        """The recorded segmentation, else the defaults."""
        return self.segmentation if self.segmentation is not None else SegmentationParams()

    def segmentation_for(
        self,
        chosen: SegmentationParams | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> SegmentationParams:
        """The segmentation to find a plate's cells with, for prediction and embedding alike.

        ``chosen`` when given, else the one the model was trained with, else the
        defaults; ``overrides`` (e.g. ``{"nucleus_channel": "Hoechst"}``) on top.
        """
        base = chosen if chosen is not None else self.segmentation_or_default()
        return replace(base, **dict(overrides or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (what the checkpoint stores under ``model_input``)."""
        return {
            "channels": [{"name": c.name, "role": c.role.value} for c in self.channels],
            "classes": list(self.classes),
            "unit": self.unit,
            "size": self.size,
            "input_size": self.input_size,
            "crop_scale": self.crop_scale,
            "normalization": self.normalization,
            "segmentation": None if self.segmentation is None else asdict(self.segmentation),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInput:
        """Read :meth:`to_dict`'s description; :class:`ModelError` if it is incomplete."""
        try:
            channels = tuple(
                InputChannel(str(c["name"]), ChannelRole(c.get("role", "other")))
                for c in data["channels"]
            )
            return cls(
                channels=channels,
                classes=tuple(str(c) for c in data["classes"]),
                unit=str(data.get("unit", "cell")),
                size=_optional_int(data.get("size")),
                input_size=_optional_int(data.get("input_size")),
                crop_scale=float(data.get("crop_scale", 1.0)),
                normalization=_optional_dict(data.get("normalization")),
                segmentation=recorded_segmentation(data.get("segmentation")),
            )
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(
                f"Incomplete model-input description in the checkpoint ({exc})."
            ) from exc


class LegacyMetadata(Protocol):
    """What :func:`legacy_model_input` reads of a format-1 checkpoint's metadata."""

    network: dict[str, Any]
    classes: tuple[str, ...]
    channel_names: tuple[str, ...]
    crop_size: int | None
    input_size: int | None
    extra: dict[str, Any]


def legacy_model_input(meta: LegacyMetadata) -> ModelInput:
    """The contract of metadata without one (checkpoint format 1): the one conversion.

    Format 1 stored the unit, tile size, crop scale and segmentation as notes in
    ``meta.extra``; absent notes mean a cell model, crops at scale 1, the
    default segmentation.  A site model's tile size is ``extra["tile_size"]``,
    else its ``crop_size`` (what format 1 wrote for both).

    Raises
    ------
    ModelError
        An unknown unit (a checkpoint from a newer version).
    """
    extra = meta.extra or {}
    unit = str(extra.get("unit", "cell"))
    size = extra.get("tile_size", meta.crop_size) if unit == "site" else meta.crop_size
    return ModelInput(
        channels=tuple(InputChannel.named(n) for n in meta.channel_names),
        classes=tuple(str(c) for c in meta.classes),
        unit=unit,
        size=_optional_int(size),
        input_size=_optional_int(meta.input_size),
        crop_scale=float(extra.get("crop_scale", 1.0)),
        normalization=_optional_dict((meta.network or {}).get("normalization")),
        segmentation=recorded_segmentation(extra.get("segmentation")) if unit == "cell" else None,
    )


def recorded_segmentation(recorded: Any) -> SegmentationParams | None:
    """Segmentation parameters from their stored description; None when absent or unreadable.

    Fields this version does not know are dropped; a description it cannot
    read (a checkpoint from another version) counts as not recorded, so the
    defaults apply.
    """
    if isinstance(recorded, SegmentationParams):
        return recorded
    if not isinstance(recorded, Mapping):
        return None
    known = {f.name for f in fields(SegmentationParams)}
    try:
        return SegmentationParams(**{k: v for k, v in recorded.items() if k in known})
    except (TypeError, ValueError, PhenoadaptError):
        return None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


# --------------------------------------------------------------------------- fit to a plate


class NamedChannels(Protocol):
    """Anything that names a model's channels (a :class:`ModelInput`, checkpoint metadata)."""

    @property
    def channel_names(self) -> tuple[str, ...]: ...


def _channel_role(channel: str | Channel) -> ChannelRole:
    if isinstance(channel, Channel):
        return (
            channel.role if channel.role is not ChannelRole.OTHER else role_from_name(channel.name)
        )
    return role_from_name(str(channel))


def _channel_name(channel: str | Channel) -> str:
    return channel.name if isinstance(channel, Channel) else str(channel)


def _channel_mismatch(
    wanted: Sequence[str],
    plate_channels: Sequence[str | Channel],
    missing: list[str],
    ambiguous: list[str],
) -> str:
    """One sentence naming what the model needs, what the plate has and the way forward."""
    trained = ", ".join(wanted)
    have = ", ".join(_channel_name(c) for c in plate_channels) or "no channels"
    unnamed = [
        _channel_name(c)
        for c in plate_channels
        if isinstance(c, Channel) and c.role is ChannelRole.OTHER
    ]
    if ambiguous:
        return (
            f"This model was trained on {trained}; on this plate several channels could be "
            f"{'; '.join(ambiguous)}: give each channel its own role (the Plate dock's channel "
            "table, or --channels KEY=NAME:ROLE)."
        )
    if unnamed:
        return (
            f"This model was trained on {trained}; this plate's channels are {have}, and "
            f"{', '.join(unnamed)} have no stain role, so {', '.join(missing)} cannot be found: "
            "name the channels (the Plate dock's channel table, or --channels, e.g. "
            "2=DNA,4=AGP) — or, if the plate lacks these stains, choose a model trained on "
            "its stains or train one (the Run dock's Train tab, or phenoadapt train)."
        )
    return (
        f"This model was trained on {trained}; this plate has {have} (no {', '.join(missing)}): "
        "choose a model trained on these stains, or train one on them (the Run dock's Train "
        "tab, or phenoadapt train)."
    )


def match_channels(model: NamedChannels, plate_channels: Sequence[str | Channel]) -> list[int]:
    """Indices of the plate channels that feed the model's channels, in its order.

    A model channel matches a plate channel of the same name
    (case-insensitive), else one of the same Cell Painting role (``"Hoechst"``
    feeds ``"DNA"``).

    Parameters
    ----------
    model
        A :class:`ModelInput` or checkpoint metadata (anything with ``channel_names``).
    plate_channels
        The plate's channels (or their names).

    Raises
    ------
    ModelError
        When some model channel has no (or no unambiguous) plate channel.
    """
    names = [_channel_name(c).strip().lower() for c in plate_channels]
    roles = [_channel_role(c) for c in plate_channels]
    picked: list[int] = []
    missing: list[str] = []
    ambiguous: list[str] = []
    for wanted in model.channel_names:
        if wanted.strip().lower() in names:
            picked.append(names.index(wanted.strip().lower()))
            continue
        role = role_from_name(wanted)
        same = [i for i, r in enumerate(roles) if r is role and role is not ChannelRole.OTHER]
        if len(same) == 1:
            picked.append(same[0])
        elif same:
            ambiguous.append(
                f"{wanted} ({', '.join(_channel_name(plate_channels[i]) for i in same)})"
            )
        else:
            missing.append(wanted)
    if missing or ambiguous:
        raise ModelError(_channel_mismatch(model.channel_names, plate_channels, missing, ambiguous))
    return picked


def plate_channels(model: NamedChannels, plate: Any) -> list[int]:
    """:func:`match_channels` for a plate, its id leading the message of a mismatch."""
    try:
        return match_channels(model, plate.channels)
    except ModelError as exc:
        raise ModelError(f"Plate {plate.plate_id}: {exc}") from None


__all__ = [
    "UNITS",
    "InputChannel",
    "ModelInput",
    "legacy_model_input",
    "match_channels",
    "plate_channels",
    "recorded_segmentation",
]
