"""Checkpoints: weights in safetensors, everything else as JSON in the same file's header.

One file (``model.safetensors``) holds the tensors and, under the header key
``"phenoadapt"``, a JSON document: the network spec (architecture and input
normalization), the classes, the channel names and order, the crop size, the
model-input contract (:class:`phenoadapt.model_input.ModelInput`: unit, crop or
tile size, crop scale, segmentation...), the training method and plates,
package versions and metrics.  Loading rebuilds the
network from the allow-list in :mod:`phenoadapt.nn.registry` and copies the
tensors in; nothing is ever unpickled, so a checkpoint from a stranger cannot
run code.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..errors import ModelError
from ..export import write_atomic
from ..model_input import ModelInput, legacy_model_input
from ..model_input import match_channels as match_channels  # re-exported: API of train/
from ..nn.registry import build_network

FORMAT_NAME = "phenoadapt-checkpoint"
#: 2: the model-input contract is stored under ``model_input``; 1: its settings were
#: notes in ``extra`` (read through :func:`phenoadapt.model_input.legacy_model_input`).
FORMAT_VERSION = 2
METADATA_KEY = "phenoadapt"
SUFFIX = ".safetensors"

#: Largest metadata document read (bytes); phenoadapt writes a few kilobytes.
MAX_METADATA_BYTES = 1_000_000
#: Deepest nesting of lists and objects in the metadata; phenoadapt writes 4 levels.
MAX_METADATA_DEPTH = 64
#: Largest network built from a checkpoint (parameters and buffers): ten times a
#: ResNet-50's 25 million, about 1 GB of float32.
MAX_PARAMETERS = 250_000_000
#: Bounds on a network description's numbers, checked before anything is built;
#: phenoadapt's own networks stay far below (width 64, 5 channels, tens of classes).
SPEC_LIMITS = {
    "width": 1024,
    "in_channels": 64,
    "encoder_channels": 64,
    "num_classes": 100_000,
    "embedding_dim": 16_384,
    "heads": 256,
    "ffn_dim": 65_536,
    "in_features": 1_000_000,
    "hidden": 65_536,
}
_ANY_INT_LIMIT = 10_000_000  # any other integer of the description
_LIST_LIMIT = 1024  # any list of the description (hidden layers, per-channel statistics)

# Strings (with their escapes) are skipped when counting the nesting of brackets.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


@dataclass
class CheckpointMetadata:
    """What a checkpoint says about its network and how it was trained.

    Attributes
    ----------
    network
        JSON spec of the network (family, architecture, normalization...).
    classes
        Class names in the order of the outputs.
    channel_names
        Channel names in the order the network expects them.
    method
        Training method (``erm``, ``arm-bn``, ``cs-arm-bn``); also the default
        test-time method.
    crop_size
        Size of the crops it was trained on (what the pipeline should extract).
    input_size
        Centre crop applied at test time (random crop of this size in training),
        or None when crops are used whole.
    training_plates, validation_plates
        Plates used.
    metrics
        Validation metrics (``val_loss``, ``val_accuracy``, ``best_epoch``...).
    training
        Training settings (the ``TrainConfig`` as a dict).
    versions
        Package versions at save time (filled in by :func:`save_checkpoint`).
    created
        ISO time stamp (filled in by :func:`save_checkpoint`).
    extra
        Free-form JSON-ready notes (none of them says how to feed the network).
    model_input
        The model-input contract; when not given (format-1 checkpoints, metadata
        built without one) it is read from the fields above and the format-1
        notes in ``extra`` by :func:`~phenoadapt.model_input.legacy_model_input`.
    """

    network: dict[str, Any]
    classes: tuple[str, ...]
    channel_names: tuple[str, ...]
    method: str = "cs-arm-bn"
    crop_size: int | None = None
    input_size: int | None = None
    training_plates: tuple[str, ...] = ()
    validation_plates: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    model_input: ModelInput = None  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        if self.model_input is None:
            self.model_input = legacy_model_input(self)

    @property
    def normalization(self) -> dict[str, Any] | None:
        """The input normalization (part of the network spec)."""
        return self.network.get("normalization")

    @property
    def architecture(self) -> str:
        """Architecture name, e.g. ``resnet50``."""
        return str(self.network.get("arch", self.network.get("family", "?")))

    def to_json(self) -> str:
        """The JSON document stored in the file header."""
        data = asdict(self)
        data["model_input"] = self.model_input.to_dict()
        data["format"] = FORMAT_NAME
        data["format_version"] = FORMAT_VERSION
        data["normalization"] = self.normalization
        return json.dumps(data, sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str, source: str = "checkpoint") -> CheckpointMetadata:
        """Parse and check the header document; :class:`ModelError` if it is not ours."""
        try:
            data = _parse_bounded_json(text, source)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ModelError(
                f"{source}: the phenoadapt metadata is not valid JSON ({exc})."
            ) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ModelError(f"{source} is not a phenoadapt checkpoint (unknown metadata format).")
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ModelError(
                f"{source} was written by a newer phenoadapt (checkpoint format {version}, this "
                f"version reads up to {FORMAT_VERSION}): update phenoadapt."
            )
        try:
            recorded = data.get("model_input") if version >= 2 else None
            return cls(
                network=dict(data["network"]),
                classes=tuple(str(c) for c in data["classes"]),
                channel_names=tuple(str(c) for c in data["channel_names"]),
                method=str(data.get("method", "cs-arm-bn")),
                crop_size=data.get("crop_size"),
                input_size=data.get("input_size"),
                training_plates=tuple(data.get("training_plates", ())),
                validation_plates=tuple(data.get("validation_plates", ())),
                metrics=dict(data.get("metrics", {})),
                training=dict(data.get("training", {})),
                versions=dict(data.get("versions", {})),
                created=str(data.get("created", "")),
                extra=dict(data.get("extra", {})),
                model_input=None if recorded is None else ModelInput.from_dict(recorded),
            )
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: incomplete phenoadapt metadata (missing {exc}).") from exc


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[`` and ``{`` in a JSON text, counted without parsing it."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _parse_bounded_json(text: str, source: str) -> Any:
    """``json.loads`` of a metadata document after bounding its size and depth.

    A crafted header nested 200,000 deep would overflow the parser's recursion;
    one of gigabytes would fill the memory.  Both are refused before parsing.
    """
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_METADATA_BYTES:
        raise ModelError(
            f"{source}: the phenoadapt metadata is {size:,} bytes, more than the "
            f"{MAX_METADATA_BYTES:,} phenoadapt reads (its own are a few kilobytes): the file "
            "is damaged or was crafted. Use a checkpoint written by phenoadapt train."
        )
    depth = _json_depth(text)
    if depth > MAX_METADATA_DEPTH:
        raise ModelError(
            f"{source}: the phenoadapt metadata is nested {depth:,} levels deep, more than the "
            f"{MAX_METADATA_DEPTH} phenoadapt reads: the file is damaged or was crafted. Use a "
            "checkpoint written by phenoadapt train."
        )
    return json.loads(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (eval mode) and its metadata."""

    model: nn.Module
    metadata: CheckpointMetadata
    path: Path | None = None


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine how a checkpoint behaves."""
    return {
        "phenoadapt": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, metadata: CheckpointMetadata
) -> Path:
    """Write ``model`` and ``metadata`` to one safetensors file, atomically.

    Parameters
    ----------
    path
        Target file; ``.safetensors`` is appended when it has no suffix.
    model
        The network (a DDP wrapper is unwrapped).  Its ``spec()`` replaces
        ``metadata.network`` so the two cannot disagree.
    metadata
        Classes, channels, method...; ``versions`` and ``created`` are filled in.

    Returns
    -------
    Path
        The file written.
    """
    model = _unwrap(model)
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(SUFFIX)
    if hasattr(model, "spec"):
        metadata.network = model.spec()
    # The contract describes the normalization the network applies: copied, never set apart.
    metadata.model_input = replace(
        metadata.model_input, normalization=metadata.network.get("normalization")
    )
    _check_contract(metadata)
    n_out = getattr(model, "num_classes", len(metadata.classes))
    if n_out != len(metadata.classes):
        raise ValueError(f"The model has {n_out} outputs but {len(metadata.classes)} classes.")
    n_in = metadata.network.get("in_channels", len(metadata.channel_names))
    if n_in != len(metadata.channel_names):
        raise ValueError(
            f"The model takes {n_in} channels but {len(metadata.channel_names)} are named."
        )
    metadata.versions = package_versions()
    metadata.created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT_NAME, METADATA_KEY: metadata.to_json()}
    # The one atomic writer (a crash never leaves half a checkpoint; a new file's
    # permissions from the umask, not mkstemp's 0600). Trainers replace their own file.
    return write_atomic(
        path, lambda tmp: save_file(tensors, str(tmp), metadata=header), overwrite=True
    )


def read_checkpoint_metadata(path: str | os.PathLike) -> CheckpointMetadata:
    """The metadata of a checkpoint, without loading its weights.

    Raises
    ------
    ModelError
        Missing file, not a safetensors file, or no phenoadapt metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"No checkpoint file at {path}.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign files
        raise ModelError(
            f"{path} is not a phenoadapt checkpoint: it cannot be read as a safetensors file "
            f"({exc}). Checkpoints are .safetensors files written by phenoadapt."
        ) from exc
    if METADATA_KEY not in header:
        raise ModelError(
            f"{path} is a safetensors file without phenoadapt metadata (written by another "
            "program?): phenoadapt cannot tell its architecture, classes or channels."
        )
    return CheckpointMetadata.from_json(header[METADATA_KEY], source=str(path))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the network of a checkpoint and load its weights (never unpickles).

    Parameters
    ----------
    path
        A file written by :func:`save_checkpoint`.
    device
        Where to put the model.

    Returns
    -------
    Checkpoint
        Model in eval mode, and metadata.
    """
    path = Path(path)
    metadata = read_checkpoint_metadata(path)
    # Everything about the network is checked on a skeleton that holds no memory
    # before the real one is built: a crafted width must not allocate terabytes.
    _check_network(metadata, path)
    model = build_network(metadata.network)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelError(f"Cannot read the weights of {path}: {exc}") from exc
    model.load_state_dict(tensors, strict=True)
    model.to(device).eval()
    return Checkpoint(model, metadata, path)


def _spec_problem(value: Any, key: str = "network") -> str | None:
    """The first number or list of a network description beyond its bound, said."""
    if isinstance(value, dict):
        for name, item in value.items():
            problem = _spec_problem(item, str(name))
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        if len(value) > _LIST_LIMIT:
            return f"{key} lists {len(value):,} values (at most {_LIST_LIMIT:,})"
        for item in value:
            problem = _spec_problem(item, key)
            if problem:
                return problem
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        limit = SPEC_LIMITS.get(key, _ANY_INT_LIMIT)
        if isinstance(value, int) and abs(value) > limit:
            return f"{key} {value:,} (at most {limit:,})"
    return None


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, from its header only."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors' own error types
        raise ModelError(f"Cannot read the weights of {path}: {exc}") from exc


def _skeleton(spec: dict[str, Any], path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the network a description builds, on the meta device (no memory)."""
    problem = _spec_problem(spec)
    if problem:
        raise ModelError(
            f"{path} describes a network with {problem}: far larger than any phenoadapt "
            "trains, so it is not built (the file is damaged or was crafted). Use a checkpoint "
            "written by phenoadapt train."
        )
    with torch.device("meta"):
        skeleton = build_network(spec)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _check_network(metadata: CheckpointMetadata, path: Path) -> None:
    """Refuse, before building anything, a network too large or unlike the file's tensors.

    Raises
    ------
    ModelError
        A description with numbers beyond :data:`SPEC_LIMITS`, more than
        :data:`MAX_PARAMETERS` values, outputs other than its classes, inputs other
        than its channels, or tensors that do not fit it.
    """
    expected = _skeleton(metadata.network, path)
    size = sum(math.prod(shape) for shape in expected.values())
    if size > MAX_PARAMETERS:
        raise ModelError(
            f"{path} describes a {metadata.architecture} network of {size:,} parameters, more "
            f"than the {MAX_PARAMETERS:,} phenoadapt loads (the file is damaged or was "
            "crafted). Use a checkpoint written by phenoadapt train."
        )
    _check_ends(metadata, path)
    tensors = _tensor_shapes(path)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k] != tensors[k])
    if missing or unexpected or wrong:
        raise ModelError(
            f"The weights in {path} do not fit its {metadata.architecture} description "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}): "
            "the file is damaged or was edited."
        )


def _spec_value(spec: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a (nested) network description."""
    if isinstance(spec, dict):
        if key in spec:
            return spec[key]
        for item in spec.values():
            found = _spec_value(item, key)
            if found is not None:
                return found
    return None


def _check_ends(metadata: CheckpointMetadata, path: Path) -> None:
    """The description's outputs and inputs agree with the classes and channels named."""
    n_out, n_in = (_spec_value(metadata.network, k) for k in ("num_classes", "in_channels"))
    if isinstance(n_out, int) and n_out != len(metadata.classes):
        raise ModelError(
            f"{path} describes a network with {n_out} outputs but names {len(metadata.classes)} "
            "classes: the file is damaged or was edited."
        )
    if isinstance(n_in, int) and n_in != len(metadata.channel_names):
        raise ModelError(
            f"{path} describes a network taking {n_in} channels but names "
            f"{len(metadata.channel_names)}: the file is damaged or was edited."
        )


# --------------------------------------------------------------------------- contract and plate


def _check_contract(metadata: CheckpointMetadata) -> None:
    """The contract agrees with the metadata's own classes, channels and sizes (ValueError)."""
    contract = metadata.model_input
    pairs = {
        "classes": (tuple(contract.classes), tuple(metadata.classes)),
        "channels": (contract.channel_names, tuple(metadata.channel_names)),
        "input_size": (contract.input_size, metadata.input_size),
    }
    if contract.unit == "cell":  # a site model's tile side may differ (format 1 tile_size)
        pairs["crop_size"] = (contract.size, metadata.crop_size)
    for name, (said, own) in pairs.items():
        if said != own:
            raise ValueError(
                f"The model-input contract says {name} {said} but the metadata {own}: build "
                "the contract from the same settings (dataclasses.replace)."
            )


def check_classes(metadata: CheckpointMetadata, moas: Iterable[str]) -> None:
    """Raise :class:`ModelError` when plate MoAs are not among the checkpoint's classes.

    Needed where predictions are scored against the plate map (accuracy); a
    plain prediction of unknown compounds does not need it.
    """
    known = set(metadata.classes)
    plate = {str(m) for m in moas if isinstance(m, str) and m.strip()}
    unknown = sorted(plate - known)
    if unknown:
        raise ModelError(
            f"The plate map has MoAs {unknown} that the checkpoint does not know (its classes: "
            f"{', '.join(metadata.classes)}): those wells cannot be scored; exclude them or use "
            "a checkpoint trained on these classes."
        )
