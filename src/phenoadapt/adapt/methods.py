"""Plate-context adaptation methods: which cells give the statistics, and predictions with them.

Five ways to set the batch-norm statistics used for a plate at test time:

========== ========================================== =========================
method     statistics from                            default context
========== ========================================== =========================
erm        the training running statistics            (none)
adabn      all images of the plate (treated+controls) the whole plate
arm-bn     the plate's treated images only            a sample of 512 treated
ben        the plate's negative controls only         the whole plate
cs-arm-bn  treated and controls pooled (the default)  a sample of 512 of the
                                                      plate (1/3 treated)
========== ========================================== =========================

A *context* is one set of statistics and the cells predicted with them
(:class:`ContextChoice`).  The default for ARM-BN and CS-ARM-BN is one sampled
context per plate (``context="sample"``, ``context_size`` cells, treated and
controls in the share of the paper's chunks), used for every cell of the plate:
about one network pass per cell, with the chunks' accuracy (docs/adaptation.md).
With the paper's chunks (``context="chunks"``, 64-treated contexts) a plate of
1,000 treated cells is split at random into 16 contexts of 62-63 treated each
(every treated cell predicted once), and each draws 128 of the plate's
controls.  Control cells are predicted too (with the statistics of a context
that used them, or else of one chosen in turn), so control wells get a
prediction in the well table; they carry no label.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import schema
from ..errors import Cancelled, ContextError, OptionError, PhenoadaptError
from ..nn.runtime import forward_in_batches, is_oom, select_device, use_amp, use_channels_last
from ..progress import CancelFn, ProgressFn
from .batchnorm import statistics_and_outputs, use_statistics

METHOD_COLUMN = "adapt_method"
N_CELLS_COLUMN = "n_cells"
AGREEMENT_COLUMN = "agreement"


class Method(StrEnum):
    """A test-time batch-norm procedure."""

    ERM = "erm"
    ADABN = "adabn"
    ARM_BN = "arm-bn"
    BEN = "ben"
    CS_ARM_BN = "cs-arm-bn"


@dataclass(frozen=True)
class MethodInfo:
    """What a method takes from the plate, and how it is shown.

    This table is the one list of methods: the CLI's ``--method`` choices, the
    GUI's combos, the demo and the docs all read it.
    """

    uses_treated: bool
    uses_controls: bool
    needs_controls: bool  # raise (or fall back) when a plate lacks controls
    whole_plate: bool  # default context: the whole plate rather than 64-treated contexts
    fallback: Method | None  # used when controls are missing, if the caller allows it
    label: str
    trainable: bool  # a model can be trained with it (the others are test-time only)
    description: str  # one line for a user choosing a method


METHODS: dict[Method, MethodInfo] = {
    Method.ERM: MethodInfo(
        False, False, False, True, None, "ERM", True,
        "No adaptation: the training labs' statistics (the baseline).",
    ),
    Method.ADABN: MethodInfo(
        True, True, False, True, None, "AdaBN", False,
        "Statistics from every cell of the new plate (no controls needed).",
    ),
    Method.ARM_BN: MethodInfo(
        True, False, False, False, None, "ARM-BN", True,
        "Statistics from small random groups of treated cells of the plate (no controls needed).",
    ),
    Method.BEN: MethodInfo(
        False, True, True, True, Method.ADABN, "BEN", False,
        "Statistics from the plate's DMSO controls only (needs controls).",
    ),
    Method.CS_ARM_BN: MethodInfo(
        True, True, True, False, Method.ARM_BN, "CS-ARM-BN", True,
        "Batch-norm statistics from the plate's DMSO controls plus a few treated cells "
        "(recommended; needs controls marked in the plate map).",
    ),
}  # fmt: skip
#: The methods a model can be trained with.
TRAIN_METHODS: tuple[Method, ...] = tuple(m for m, info in METHODS.items() if info.trainable)
DEFAULT_METHOD = Method.CS_ARM_BN
DEFAULT_TREATED_PER_CONTEXT = 64
DEFAULT_CONTROLS_PER_CONTEXT = 128
#: Fewest negative controls a plate needs for BEN and CS-ARM-BN, per unit of the model's
#: inputs (the one rule; :class:`ContextSpec` applies it).  Cells: 32 control crops.  Sites:
#: a 128 x 128 tile holds the pixels of ~7 cell crops of 48 x 48 (and tens of cells), so
#: batch-norm statistics pooled over 8 control fields rest on more pixels than those of 32
#: control crops, and 8 = 4 control wells x 2 sites, which small plates have.
MIN_CONTROLS: dict[str, int] = {"cell": 32, "site": 8}
DEFAULT_MIN_CONTROLS = MIN_CONTROLS["cell"]
WHOLE_PLATE = "plate"
#: Cells in a sampled plate context (one train-mode pass of the default ``max_pass_size``).
DEFAULT_CONTEXT_SIZE = 512


class ContextChoice(StrEnum):
    """Which cells of a plate give the statistics its cells are predicted with.

    ``chunks``: the paper's contexts (64 treated + 128 controls), a set of
    statistics per chunk of treated cells; ``plate``: one context of every cell
    of the plate; ``sample``: one context per plate of ``context_size`` random
    cells (treated and controls in the chunks' proportion), used for every cell.
    """

    CHUNKS = "chunks"
    PLATE = "plate"
    SAMPLE = "sample"


#: One line per context choice, for help texts and menus.
CONTEXT_CHOICES: dict[ContextChoice, str] = {
    ContextChoice.CHUNKS: "the paper's contexts: statistics of 64 treated + 128 controls per "
    "64 treated cells (about 3 passes of the network per cell)",
    ContextChoice.PLATE: "one context per plate: statistics of every cell of the plate",
    ContextChoice.SAMPLE: "one context per plate: statistics of a random sample of the plate "
    "(context_size cells, treated and controls as in the chunks), about 1 pass per cell",
}
#: The context of ARM-BN and CS-ARM-BN when none is asked for (AdaBN and BEN use the plate):
#: the fastest choice whose accuracy is not below the paper's chunks (docs/adaptation.md).
DEFAULT_CONTEXT = ContextChoice.SAMPLE


def parse_context(context: str | ContextChoice) -> ContextChoice:
    """Return the :class:`ContextChoice` named ``context`` (``"chunks"``, ``"plate"``...)."""
    if isinstance(context, ContextChoice):
        return context
    key = str(context).strip().lower()
    for c in ContextChoice:
        if key == c.value:
            return c
    raise ValueError(
        f"Unknown plate context {context!r}: use one of "
        f"{', '.join(c.value for c in ContextChoice)}."
    )


def method_choices(trainable: bool = False) -> tuple[str, ...]:
    """Method names as menus list them: the default first, then the others in table order.

    Parameters
    ----------
    trainable
        Only the methods a model can be trained with (:data:`TRAIN_METHODS`).
    """
    methods = TRAIN_METHODS if trainable else tuple(Method)
    return (DEFAULT_METHOD.value, *(m.value for m in methods if m is not DEFAULT_METHOD))


def parse_method(method: str | Method) -> Method:
    """Return the :class:`Method` named ``method`` (``"cs-arm-bn"``, ``"CS_ARM_BN"``...)."""
    if isinstance(method, Method):
        return method
    key = str(method).strip().lower().replace("_", "-")
    for m in Method:
        if key in (m.value, m.value.replace("-", "")):
            return m
    raise ValueError(
        f"Unknown adaptation method {method!r}: use one of {', '.join(m.value for m in Method)}."
    )


@dataclass(frozen=True)
class Context:
    """One set of batch-norm statistics and the cells predicted with them.

    Attributes
    ----------
    plate
        Plate of every cell in the context.
    method
        Method whose rule chose the cells.
    statistics
        Positions (row numbers of the table and images) of the cells whose images
        give the statistics; empty = the training running statistics (ERM).
    predict
        Positions of the cells predicted with those statistics.
    """

    plate: str
    method: Method
    statistics: np.ndarray
    predict: np.ndarray


def context_from_cells(
    plate: str, method: str | Method, treated: np.ndarray, controls: np.ndarray
) -> Context:
    """Context of a method from a sample of treated and control cells (treated are predicted).

    Used by evaluation samplers that choose the cells themselves (e.g. label shift).
    """
    m = parse_method(method)
    info = METHODS[m]
    parts = []
    if info.uses_treated:
        parts.append(np.asarray(treated, dtype=np.int64))
    if info.uses_controls:
        parts.append(np.asarray(controls, dtype=np.int64))
    stats = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return Context(str(plate), m, stats, np.asarray(treated, dtype=np.int64))


# --------------------------------------------------------------------------- planning


def _roles(table: pd.DataFrame) -> np.ndarray:
    if schema.ROLE not in table.columns or schema.PLATE not in table.columns:
        raise ContextError(
            f"The cell table needs columns {schema.PLATE} and {schema.ROLE} to build plate "
            "contexts: attach a plate map that marks control and treated wells."
        )
    return table[schema.ROLE].astype(str).str.lower().to_numpy()


def _resolve_method(
    plate: str,
    method: Method,
    n_treated: int,
    n_controls: int,
    min_controls: int,
    allow_fallback: bool,
) -> Method:
    """The method a plate can support, or a ContextError saying why not."""
    info = METHODS[method]
    if info.needs_controls and n_controls < min_controls:
        if n_controls == 0:
            problem = f"Plate {plate} has no control cells"
        else:
            problem = f"Plate {plate} has only {n_controls} control cells"
        need = (
            f"{info.label} needs at least {min_controls} (min_controls) negative-control cells "
            f"(e.g. DMSO wells with {schema.ROLE} 'control')"
        )
        if info.fallback is not None and allow_fallback:
            warnings.warn(
                f"{problem}; {need}. "
                f"Falling back to {METHODS[info.fallback].label} for this plate.",
                stacklevel=3,
            )
            return _resolve_method(
                plate, info.fallback, n_treated, n_controls, min_controls, allow_fallback
            )
        hint = (
            f"; or allow the fallback to {METHODS[info.fallback].label}"
            if info.fallback is not None
            else ""
        )
        raise ContextError(
            f"{problem}; {need}. Mark the control wells in the plate map, lower min_controls{hint}."
        )
    if method is Method.ARM_BN and n_treated == 0:
        raise ContextError(
            f"Plate {plate} has no treated cells: ARM-BN computes its statistics from treated "
            "images. Check the plate map's roles, or use 'ben' (controls only)."
        )
    return method


def _split_treated(
    treated: np.ndarray, per_context: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Random near-equal parts of at most ``per_context`` treated cells (at least one part)."""
    k = max(1, math.ceil(len(treated) / per_context))
    return [np.sort(p) for p in np.array_split(rng.permutation(treated), k)]


def _control_blocks(
    controls: np.ndarray, n_blocks: int, per_block: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Control samples for ``n_blocks`` contexts: disjoint while controls last, then reshuffled."""
    size = min(per_block, len(controls))
    if size == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(n_blocks)]
    blocks: list[np.ndarray] = []
    pool = rng.permutation(controls)
    cursor = 0
    for _ in range(n_blocks):
        if cursor + size > len(pool):
            pool, cursor = rng.permutation(controls), 0
        blocks.append(np.sort(pool[cursor : cursor + size]))
        cursor += size
    return blocks


def _plate_contexts(
    plate: str,
    method: Method,
    treated: np.ndarray,
    controls: np.ndarray,
    per_context: int | None,
    controls_per_context: int,
    predict_controls: bool,
    rng: np.random.Generator,
) -> list[Context]:
    info = METHODS[method]
    empty = np.empty(0, dtype=np.int64)
    to_predict_controls = controls if predict_controls else empty
    if method is Method.ERM or per_context is None:
        stats = np.concatenate(
            [treated if info.uses_treated else empty, controls if info.uses_controls else empty]
        )
        predict = np.sort(np.concatenate([treated, to_predict_controls]))
        return [Context(plate, method, np.sort(stats), predict)]

    parts = _split_treated(treated, per_context, rng)
    blocks = (
        _control_blocks(controls, len(parts), controls_per_context, rng)
        if info.uses_controls
        else [empty] * len(parts)
    )
    # Each control is predicted once: by the first context whose statistics include it,
    # the others in turn across contexts.
    owner: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for cell in block.tolist():
            owner.setdefault(cell, i)
    extra: list[list[int]] = [[] for _ in parts]
    for j, cell in enumerate(c for c in to_predict_controls.tolist() if c not in owner):
        extra[j % len(parts)].append(cell)
    contexts = []
    for i, (part, block) in enumerate(zip(parts, blocks, strict=True)):
        stats = np.concatenate([part if info.uses_treated else empty, block])
        own = [c for c in block.tolist() if owner[c] == i] if predict_controls else []
        predict = np.sort(np.concatenate([part, np.asarray(own + extra[i], dtype=np.int64)]))
        contexts.append(Context(plate, method, np.sort(stats), predict))
    return contexts


def _sample_context(
    plate: str,
    method: Method,
    treated: np.ndarray,
    controls: np.ndarray,
    size: int,
    ratio: tuple[int, int],
    predict_controls: bool,
    rng: np.random.Generator,
) -> Context:
    """One context of at most ``size`` random cells of the plate, used for all its cells.

    CS-ARM-BN keeps the share of treated cells that the plate's chunks would
    have (``ratio`` = L, C): the plate's T treated split into chunks of
    ``T / ceil(T / L)`` each with ``min(C, controls)`` controls.  The sample
    takes about ``size`` cells in that proportion (as many controls as that
    allows, then the treated to match), so under label shift its statistics
    are no more biased by the treated class mix than the chunks' (the bias
    grows with the treated share); with more cells they are less noisy.
    AdaBN samples the plate uniformly, ARM-BN its treated and BEN its controls.
    """
    info = METHODS[method]

    def pick(cells: np.ndarray, k: int) -> np.ndarray:
        k = max(0, min(int(k), len(cells)))
        return np.sort(rng.choice(cells, k, replace=False)) if k else cells[:0]

    if method is Method.ADABN:
        stats = pick(np.concatenate([treated, controls]), size)
    elif info.uses_treated and info.uses_controls:
        per_chunk, controls_per_chunk = ratio
        treated_chunk = len(treated) / max(1, math.ceil(len(treated) / per_chunk))
        controls_chunk = min(controls_per_chunk, len(controls))
        if controls_chunk == 0:
            stats = pick(treated, size)
        else:
            n_controls = round(size * controls_chunk / (treated_chunk + controls_chunk))
            chosen_controls = pick(controls, n_controls)
            n_treated = round(len(chosen_controls) * treated_chunk / controls_chunk)
            chosen_treated = pick(treated, min(n_treated, size - len(chosen_controls)))
            stats = np.sort(np.concatenate([chosen_treated, chosen_controls]))
    elif info.uses_treated:
        stats = pick(treated, size)
    else:
        stats = pick(controls, size)
    predict = np.sort(np.concatenate([treated, controls if predict_controls else controls[:0]]))
    return Context(plate, method, stats, predict)


def _context_of(
    method: Method,
    treated_per_context: int | str | None,
    context: ContextChoice | None,
) -> tuple[ContextChoice, int]:
    """The context choice of a plate and the treated cells per chunk."""
    if treated_per_context == WHOLE_PLATE:
        if context not in (None, ContextChoice.PLATE):
            raise ValueError(
                f"treated_per_context='plate' contradicts context={context.value!r}: give one."
            )
        return ContextChoice.PLATE, DEFAULT_TREATED_PER_CONTEXT
    if treated_per_context is None:
        per_context = DEFAULT_TREATED_PER_CONTEXT
    elif isinstance(treated_per_context, int | np.integer) and treated_per_context >= 1:
        per_context = int(treated_per_context)
    else:
        raise ValueError(
            f"treated_per_context must be a positive int or 'plate', got {treated_per_context!r}."
        )
    if context is not None:
        return context, per_context
    if treated_per_context is not None:
        return ContextChoice.CHUNKS, per_context  # a chunk size asks for chunks
    if METHODS[method].whole_plate:
        return ContextChoice.PLATE, per_context
    return DEFAULT_CONTEXT, per_context


def plan_contexts(
    table: pd.DataFrame,
    method: str | Method = DEFAULT_METHOD,
    *,
    treated_per_context: int | str | None = None,
    controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT,
    min_controls: int = DEFAULT_MIN_CONTROLS,
    allow_fallback: bool = False,
    predict_controls: bool = True,
    seed: int = 0,
    context: str | ContextChoice | None = None,
    context_size: int = DEFAULT_CONTEXT_SIZE,
) -> list[Context]:
    """Split each plate of a cell table into the contexts of an adaptation method.

    Parameters
    ----------
    table
        One row per cell with ``Metadata_Plate`` and ``Metadata_Role``; positions
        in the returned contexts are row numbers of this table.
    method
        One of :class:`Method` (default CS-ARM-BN).
    treated_per_context
        Treated cells per chunk, or ``"plate"`` for one context per plate
        (the same as ``context="plate"``).  None: 64.  Also sets the share of
        treated cells in a sampled context (with ``controls_per_context``).
    controls_per_context
        Controls drawn per chunk (all of them when the plate has fewer).
        Unused for whole-plate contexts, which take every control.
    min_controls
        Fewest control cells a plate needs for BEN and CS-ARM-BN.
    allow_fallback
        When a plate has too few controls: False (default) raises
        :class:`~phenoadapt.errors.ContextError`; True warns and uses CS-ARM-BN ->
        ARM-BN, BEN -> AdaBN for that plate.
    predict_controls
        Also predict control cells.
    seed
        Seed of the random split into contexts.
    context
        ``"chunks"``, ``"plate"`` or ``"sample"`` (see :class:`ContextChoice`).
        None: chunks when ``treated_per_context`` is a number, else the method's
        default (:data:`DEFAULT_CONTEXT` for ARM-BN and CS-ARM-BN, the whole
        plate for AdaBN and BEN).
    context_size
        Cells in a sampled context (``context="sample"``).

    Returns
    -------
    list of Context
        Plates in sorted order; excluded cells appear in no context (a plate whose
        cells are all excluded, in none).
    """
    base = parse_method(method)
    choice = None if context is None else parse_context(context)
    if context_size < 1:
        raise ValueError(f"context_size must be at least 1, got {context_size}.")
    roles = _roles(table)
    plates = table[schema.PLATE].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    contexts: list[Context] = []
    for plate in sorted(set(plates)):
        on_plate = plates == plate
        treated = np.flatnonzero(on_plate & (roles == schema.Role.TREATED.value))
        controls = np.flatnonzero(on_plate & (roles == schema.Role.CONTROL.value))
        if len(treated) + len(controls) == 0:
            continue  # every cell excluded: nothing to adapt or predict
        m = _resolve_method(plate, base, len(treated), len(controls), min_controls, allow_fallback)
        kind, per_context = _context_of(m, treated_per_context, choice)
        if kind is ContextChoice.SAMPLE and m is not Method.ERM:
            contexts.append(
                _sample_context(
                    plate,
                    m,
                    treated,
                    controls,
                    context_size,
                    (per_context, controls_per_context),
                    predict_controls,
                    rng,
                )  # fmt: skip
            )
            continue
        contexts += _plate_contexts(
            plate, m, treated, controls, None if kind is ContextChoice.PLATE else per_context,
            controls_per_context, predict_controls, rng,
        )  # fmt: skip
    return contexts


@dataclass(frozen=True)
class ContextSpec:
    """How a plate's contexts are drawn: planned once, from one record, for every caller.

    Prediction (:func:`predict_plate`, :func:`phenoadapt.pipeline.run_plates`),
    embeddings (:mod:`phenoadapt.pipeline.embed`) and the GUI pass one
    ``ContextSpec`` instead of its loose fields; :meth:`plan` turns it into the
    contexts of a method (:func:`plan_contexts`).

    Attributes
    ----------
    context
        ``"chunks"``, ``"plate"`` or ``"sample"`` (:class:`ContextChoice`); None:
        the method's default.
    context_size
        Cells in a sampled context.
    treated_per_context, controls_per_context
        Chunk sizes (None: 64 treated; 128 controls), also the share of treated
        cells in a sampled context.
    min_controls
        Fewest control cells (or sites) a plate needs for BEN and CS-ARM-BN;
        None: the unit's rule, :data:`MIN_CONTROLS` (32 cells, 8 sites).
    allow_fallback
        On a plate with too few controls, warn and use ARM-BN (CS-ARM-BN) or
        AdaBN (BEN) instead of raising.
    seed
        Seed of the random draws.
    """

    context: ContextChoice | str | None = None
    context_size: int = DEFAULT_CONTEXT_SIZE
    treated_per_context: int | str | None = None
    controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT
    min_controls: int | None = None
    allow_fallback: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.context is not None:
            try:
                object.__setattr__(self, "context", parse_context(self.context))
            except ValueError as exc:
                raise OptionError(str(exc)) from None
        if self.context_size < 1:
            raise OptionError(f"context_size must be at least 1, got {self.context_size}.")
        if self.controls_per_context < 1:
            raise OptionError(
                f"controls_per_context must be at least 1, got {self.controls_per_context}."
            )
        if self.min_controls is not None and self.min_controls < 1:
            raise OptionError(f"min_controls must be at least 1, got {self.min_controls}.")

    def min_controls_for(self, unit: str = "cell") -> int:
        """Fewest controls a plate needs, for a model whose inputs are ``unit`` (cell/site)."""
        if self.min_controls is not None:
            return int(self.min_controls)
        if unit not in MIN_CONTROLS:
            raise OptionError(f"Unknown unit {unit!r}: use one of {', '.join(MIN_CONTROLS)}.")
        return MIN_CONTROLS[unit]

    def plan(
        self,
        table: pd.DataFrame,
        method: str | Method = DEFAULT_METHOD,
        *,
        unit: str = "cell",
        predict_controls: bool = True,
    ) -> list[Context]:
        """The contexts of ``method`` for the plates of ``table`` (see :func:`plan_contexts`)."""
        return plan_contexts(
            table, method, treated_per_context=self.treated_per_context,
            controls_per_context=self.controls_per_context,
            min_controls=self.min_controls_for(unit), allow_fallback=self.allow_fallback,
            predict_controls=predict_controls, seed=self.seed,
            context=None if self.context is None else ContextChoice(self.context),
            context_size=self.context_size,
        )  # fmt: skip


# --------------------------------------------------------------------------- image checks


def bad_images(
    images: np.ndarray | torch.Tensor, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of images with NaN/inf pixels and of constant images (every channel flat).

    Returns
    -------
    (nonfinite, constant)
        Boolean arrays of length ``n``.
    """
    n = int(images.shape[0])
    nonfinite = np.zeros(n, dtype=bool)
    constant = np.zeros(n, dtype=bool)
    for start in range(0, n, chunk):
        block = images[start : start + chunk]
        block = (
            block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
        )
        # Images (n, C, ...) are judged per channel; a feature row (n, F) is one "channel".
        channels = block.shape[1] if block.ndim > 2 else 1
        flat = block.reshape(block.shape[0], channels, -1)
        finite = (
            np.isfinite(flat).all(axis=(1, 2))
            if flat.dtype.kind == "f"
            else np.ones(len(flat), bool)
        )
        nonfinite[start : start + len(flat)] = ~finite
        with np.errstate(invalid="ignore"):
            spread = flat.max(axis=2) - flat.min(axis=2)
        constant[start : start + len(flat)] = finite & (spread == 0).all(axis=1)
    return nonfinite, constant


def _where(table: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    """'plate P1 well B03 (4 cells), ...' for the flagged rows."""
    cols = [c for c in (schema.PLATE, schema.WELL) if c in table.columns]
    if not cols:
        rows = np.flatnonzero(mask)[:limit]
        return "rows " + ", ".join(map(str, rows))
    counts = table.loc[mask, cols].astype(str).value_counts(sort=True)
    parts = []
    for key, count in list(counts.items())[:limit]:
        key = key if isinstance(key, tuple) else (key,)
        label = " ".join(
            f"{c.removeprefix('Metadata_').lower()} {v}" for c, v in zip(cols, key, strict=True)
        )
        parts.append(f"{label} ({count} cells)")
    more = f" and {len(counts) - limit} more wells" if len(counts) > limit else ""
    return ", ".join(parts) + more


def check_images(images: np.ndarray | torch.Tensor, table: pd.DataFrame) -> None:
    """Raise :class:`ContextError` when crops hold NaN/inf pixels or are constant.

    Such crops (failed segmentation, crops off the field, corrupt planes) would
    corrupt every statistic of their context.
    """
    if int(images.shape[0]) != len(table):
        raise ContextError(
            f"{int(images.shape[0])} images were given for {len(table)} table rows: "
            "images and table must describe the same cells in the same order."
        )
    nonfinite, constant = bad_images(images)
    n = len(table)
    if nonfinite.any():
        raise ContextError(
            f"{int(nonfinite.sum())} of {n} crops contain NaN or infinite pixels, in "
            f"{_where(table, nonfinite)}. Re-read those fields or drop these cells."
        )
    if constant.any():
        raise ContextError(
            f"{int(constant.sum())} of {n} crops are constant (every pixel of every channel has "
            f"the same value), in {_where(table, constant)}. These are usually crops of empty or "
            "blank fields or failed segmentation; drop these cells before adapting."
        )


# --------------------------------------------------------------------------- prediction


@dataclass
class ContextOutput:
    """Predictions of one context: rows follow ``context.predict``."""

    context: Context
    probabilities: np.ndarray
    embeddings: np.ndarray | None = None


def _gather(
    images: np.ndarray | torch.Tensor, idx: np.ndarray, input_size: int | None
) -> torch.Tensor:
    """Images at positions ``idx`` as a float32 tensor, centre-cropped to ``input_size``."""
    if isinstance(images, torch.Tensor):
        batch = images[torch.as_tensor(idx, dtype=torch.long, device=images.device)].float()
    else:
        batch = torch.from_numpy(np.ascontiguousarray(np.asarray(images)[idx], dtype=np.float32))
    if input_size is not None:
        h, w = batch.shape[-2:]
        if h < input_size or w < input_size:
            raise ValueError(
                f"Images of {h}x{w} pixels are smaller than the model's input size {input_size}: "
                "extract larger crops."
            )
        top, left = (h - input_size) // 2, (w - input_size) // 2
        batch = batch[..., top : top + input_size, left : left + input_size]
    return batch


def _model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


class _Rows:
    """Images at positions ``idx``, gathered (and centre-cropped) one batch at a time.

    Lets :func:`~phenoadapt.nn.runtime.forward_in_batches` run over a whole plate
    without first copying all of its crops into one float32 array.
    """

    def __init__(
        self, images: np.ndarray | torch.Tensor, idx: np.ndarray, input_size: int | None
    ) -> None:
        self.images, self.idx, self.input_size = images, idx, input_size
        self.shape = (len(idx),)

    def __getitem__(self, sl: slice) -> torch.Tensor:
        return _gather(self.images, self.idx[sl], self.input_size)


def _classify(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (model(x),)


def _embed_and_classify(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = model.embed(x)
    return features, model.classify(features)


def _positions_in(cells: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Position of each of ``cells`` in ``within`` (-1 where absent)."""
    if len(within) == 0:
        return np.full(len(cells), -1, dtype=np.int64)
    order = np.argsort(within, kind="stable")
    ranked = within[order]
    loc = np.clip(np.searchsorted(ranked, cells), 0, len(ranked) - 1)
    return np.where(ranked[loc] == cells, order[loc], -1)


def context_outputs(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    context: Context,
    head: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]],
    *,
    batch_size: int = 256,
    max_pass_size: int | None = 512,
    input_size: int | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    cancel: CancelFn | None = None,
) -> tuple[torch.Tensor, ...]:
    """``head(model, x)`` for the cells of ``context.predict``, under the context's statistics.

    The statistics are computed once for the context.  When its statistics
    cells fit one train-mode pass (``max_pass_size``), that pass's outputs are
    the (exact) outputs of those cells and only the other cells are forwarded,
    in eval mode with the statistics installed, at the speed of a plain
    forward pass; otherwise the statistics are accumulated layer by layer (see
    :mod:`.batchnorm`) and every cell is forwarded in eval mode.

    Parameters
    ----------
    model
        Left as it was (buffers, train/eval flags).
    images
        ``(n, C, h, w)`` raw intensities; context positions index its first axis.
    context
        The cells giving the statistics and the cells to predict.
    head
        ``head(model, batch)`` -> tuple of tensors with the batch as first dim.
    batch_size, max_pass_size, input_size, amp, channels_last, cancel
        See :func:`predict_contexts`.

    Returns
    -------
    tuple of torch.Tensor
        Float32 CPU tensors, rows in the order of ``context.predict``.
    """
    device = _model_device(model)
    amp_on = use_amp(device, amp)
    cl = use_channels_last(device, channels_last)
    stats, own = {}, None
    if len(context.statistics):
        stats, own = statistics_and_outputs(
            model, _gather(images, context.statistics, input_size), head,
            chunk_size=max_pass_size, channels_last=cl, cancel=cancel,
        )  # fmt: skip
    predict = np.asarray(context.predict, dtype=np.int64)
    where = (
        _positions_in(predict, np.asarray(context.statistics, dtype=np.int64))
        if own is not None
        else np.full(len(predict), -1, dtype=np.int64)
    )
    rest = np.flatnonzero(where < 0)
    rest_out: tuple[torch.Tensor, ...] | None = None
    if len(rest):
        with use_statistics(model, stats):
            rest_out = forward_in_batches(
                lambda x: head(model, x), _Rows(images, predict[rest], input_size),
                batch_size=batch_size, device=device, amp=amp_on, channels_last=cl,
                cancel=cancel,
            )  # fmt: skip
    if own is None:
        assert rest_out is not None
        return rest_out
    own_cpu = tuple(o.float().cpu() for o in own)
    if rest_out is None:
        idx = torch.from_numpy(where)
        return tuple(o[idx] for o in own_cpu)
    outs = []
    inside = np.flatnonzero(where >= 0)
    for o, r in zip(own_cpu, rest_out, strict=True):
        full = torch.empty((len(predict), *o.shape[1:]), dtype=torch.float32)
        full[torch.from_numpy(inside)] = o[torch.from_numpy(where[inside])]
        full[torch.from_numpy(rest)] = r
        outs.append(full)
    return tuple(outs)


@dataclass(frozen=True)
class Runtime:
    """Where and how a network runs at test time: the one place for device, AMP and memory.

    Attributes
    ----------
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...; None keeps the
        models where they are.
    batch_size
        Images per forward pass (halved on out-of-memory errors).
    max_pass_size
        Largest context passed at once for the statistics (larger ones are
        accumulated exactly, layer by layer); None: any context in one pass.
    amp, channels_last
        None: bfloat16 autocast and channels-last on CUDA only (the statistics
        pass runs in float32); False: never.
    """

    device: str | torch.device | None = "auto"
    batch_size: int = 256
    max_pass_size: int | None = 512
    amp: bool | None = None
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionError(f"batch_size must be at least 1, got {self.batch_size}.")

    def place(self, models: Sequence[nn.Module]) -> None:
        """Move the models to the device (nothing when ``device`` is None)."""
        if self.device is None:
            return
        target = select_device(self.device)
        for model in models:
            model.to(target)

    @contextlib.contextmanager
    def out_of_memory_said(self, what: str, hint: str) -> Iterator[None]:
        """Turn an out-of-memory error that persists (at batch size 1) into a user error.

        ``what`` names the work (``"predicting plate P1"``), ``hint`` the way out
        beyond a device with more memory.
        """
        try:
            yield
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            raise PhenoadaptError(
                f"Out of memory while {what}, even after halving the batch size down to 1: use "
                f"a device with more memory (--device cpu) or {hint}."
            ) from exc


#: Head of a network pass: ``head(model, batch)`` -> tensors with the batch as first dim.
Head = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]]


def run_contexts(
    members: Sequence[nn.Module],
    images: np.ndarray | torch.Tensor,
    contexts: Sequence[Context],
    head: Head,
    runtime: Runtime,
    *,
    input_size: int | None = None,
    stage: str = "adapt",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Iterator[tuple[Context, list[tuple[torch.Tensor, ...]]]]:
    """Each context with every member's ``head`` outputs for its cells, under its statistics.

    The one loop over contexts behind predictions and embeddings: the
    statistics of a context are computed once per model
    (:func:`context_outputs`), ``progress(stage, done, total)`` follows each
    context and ``cancel()`` is polled between contexts and batches.
    """
    for i, ctx in enumerate(contexts):
        if cancel is not None and cancel():
            raise Cancelled("Cancelled during plate-context adaptation.")
        outs = [
            context_outputs(
                model,
                images,
                ctx,
                head,
                batch_size=runtime.batch_size,
                max_pass_size=runtime.max_pass_size,
                input_size=input_size,
                amp=runtime.amp,
                channels_last=runtime.channels_last,
                cancel=cancel,
            )  # fmt: skip
            for model in members
        ]
        yield ctx, outs
        if progress is not None:
            progress(stage, i + 1, len(contexts))


def predict_contexts(
    models: nn.Module | Sequence[nn.Module],
    images: np.ndarray | torch.Tensor,
    contexts: Sequence[Context],
    *,
    batch_size: int = 256,
    max_pass_size: int | None = 512,
    input_size: int | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    return_embeddings: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[ContextOutput]:
    """Class probabilities of each context's cells under that context's statistics.

    Each context's statistics are computed once per model; its cells are then
    predicted in eval mode with them installed (see :func:`context_outputs`).

    Parameters
    ----------
    models
        One classifier or an ensemble (probabilities are averaged).  Each runs on
        the device it is on and is left as it was.
    images
        ``(n, C, h, w)`` raw intensities; context positions index its first axis.
    contexts
        From :func:`plan_contexts` or :func:`context_from_cells`.
    batch_size
        Prediction batch (halved on out-of-memory errors).
    max_pass_size
        Largest context passed at once for the statistics; larger contexts are
        accumulated exactly, layer by layer (see :mod:`.batchnorm`).
    input_size
        Centre-crop images to this size first (models trained on random crops).
    amp, channels_last
        None: bfloat16 autocast and channels-last on CUDA only (the statistics
        pass runs in float32).
    return_embeddings
        Also return pooled features (single model only: an ensemble's members
        have unrelated feature spaces).
    progress, cancel
        ``progress("adapt", done, total)`` after each context; ``cancel()`` polled
        between contexts and batches.
    """
    members = [models] if isinstance(models, nn.Module) else list(models)
    runtime = Runtime(
        device=None, batch_size=batch_size, max_pass_size=max_pass_size, amp=amp,
        channels_last=channels_last,
    )  # fmt: skip
    return adapt_contexts(
        members, images, contexts, runtime, input_size=input_size,
        return_embeddings=return_embeddings, progress=progress, cancel=cancel,
    )  # fmt: skip


def adapt_contexts(
    members: Sequence[nn.Module],
    images: np.ndarray | torch.Tensor,
    contexts: Sequence[Context],
    runtime: Runtime,
    *,
    input_size: int | None = None,
    return_embeddings: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[ContextOutput]:
    """:func:`predict_contexts` with its run settings as one :class:`Runtime`.

    The in-process :class:`ContextRunner` of :func:`predict_plate`; the models
    run where they are (``runtime.device`` is not applied here).
    """
    if not members:
        raise ValueError("predict_contexts needs at least one model.")
    if return_embeddings and len(members) > 1:
        raise ValueError("Embeddings can be returned for a single model, not an ensemble.")
    head = _embed_and_classify if return_embeddings else _classify
    outputs: list[ContextOutput] = []
    for ctx, outs in run_contexts(
        members, images, contexts, head, runtime, input_size=input_size, progress=progress,
        cancel=cancel,
    ):  # fmt: skip
        prob_sum: torch.Tensor | None = None
        for out in outs:
            probs = torch.softmax(out[-1].float(), dim=1)
            prob_sum = probs if prob_sum is None else prob_sum + probs
        assert prob_sum is not None
        features = outs[-1][0].numpy() if return_embeddings else None
        outputs.append(ContextOutput(ctx, (prob_sum / len(members)).numpy(), features))
    return outputs


class ContextRunner(Protocol):
    """Runs a plate's planned contexts: the signature of :func:`adapt_contexts`.

    :func:`predict_plate` hands it the plate's :class:`Runtime` as one; a runner
    returns one :class:`ContextOutput` per context, in context order (in this
    process, :func:`adapt_contexts`; as dask tasks,
    :meth:`phenoadapt.pipeline.context_tasks.ClusterNetwork.runner`).
    """

    def __call__(
        self,
        members: Sequence[nn.Module],
        images: np.ndarray | torch.Tensor,
        contexts: Sequence[Context],
        runtime: Runtime,
        *,
        input_size: int | None = ...,
        return_embeddings: bool = ...,
        progress: ProgressFn | None = ...,
        cancel: CancelFn | None = ...,
    ) -> list[ContextOutput]: ...


def normalized_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of each row divided by ``log(K)``: 0 = certain, 1 = uniform."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    k = p.shape[1]
    if k < 2:
        return np.zeros(len(p))
    return -(p * np.log(p)).sum(axis=1) / math.log(k)


@dataclass
class PlatePredictions:
    """Adapted predictions of one or more plates.

    Attributes
    ----------
    cells
        One row per input cell (same index as the input table): metadata,
        ``adapt_method``, ``prob_<class>``, ``predicted_moa``, ``confidence`` (highest
        probability) and ``uncertainty`` (normalized entropy); NaN for excluded cells.
    wells
        One row per well: mean probabilities, predicted class of the mean,
        confidence, uncertainty, ``n_cells`` and ``agreement`` (fraction of cells
        voting for the well's class).
    methods
        Method used per plate (differs from the request after a fallback).
    embeddings
        ``(n_cells, feature_dim)`` pooled features under the context statistics,
        NaN rows for excluded cells; None unless asked for.
    """

    cells: pd.DataFrame
    wells: pd.DataFrame
    methods: dict[str, Method]
    classes: tuple[str, ...]
    embeddings: np.ndarray | None = field(default=None, repr=False)


def prob_columns(classes: Sequence[str]) -> list[str]:
    """Column names of class probabilities (``prob_<class>``)."""
    return [f"{schema.PROB_PREFIX}{c}" for c in classes]


def summarize_wells(cells: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Aggregate per-cell predictions into per-well predictions (mean probability).

    Parameters
    ----------
    cells
        The ``cells`` table of :class:`PlatePredictions` (rows with NaN
        probabilities, i.e. excluded cells, are ignored).
    classes
        Class names, in the order of the probability columns.
    """
    pcols = prob_columns(classes)
    keys = [schema.PLATE, schema.WELL]
    done = cells.dropna(subset=pcols)
    if done.empty:
        columns = [*keys, N_CELLS_COLUMN, *pcols, schema.PREDICTION, schema.CONFIDENCE]
        return pd.DataFrame(columns=[*columns, schema.UNCERTAINTY, AGREEMENT_COLUMN])
    grouped = done.groupby(keys, sort=True)
    wells = grouped[pcols].mean()
    meta = [c for c in done.columns if schema.is_metadata(c) and c not in keys and c != schema.SITE]
    meta += [METHOD_COLUMN] if METHOD_COLUMN in done.columns else []
    if meta:
        wells = grouped[meta].first().join(wells)
    wells.insert(len(meta), N_CELLS_COLUMN, grouped.size())
    probs = wells[pcols].to_numpy()
    well_class = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    wells[schema.PREDICTION] = well_class
    wells[schema.CONFIDENCE] = probs.max(axis=1)
    wells[schema.UNCERTAINTY] = normalized_entropy(probs)
    # Fraction of each well's cells voting for the well's class; group numbers follow the
    # sorted well order of ``wells`` (a merge on the keys cost more than the network here).
    codes = grouped.ngroup().to_numpy()
    votes = done[schema.PREDICTION].to_numpy(dtype=object) == well_class[codes]
    n_groups = len(wells)
    agree = np.bincount(codes, weights=votes, minlength=n_groups) / np.bincount(
        codes, minlength=n_groups
    )
    wells[AGREEMENT_COLUMN] = agree
    return wells.reset_index()


def predict_plate(
    models: nn.Module | Sequence[nn.Module],
    images: np.ndarray | torch.Tensor,
    table: pd.DataFrame,
    classes: Sequence[str],
    method: str | Method = DEFAULT_METHOD,
    *,
    contexts: ContextSpec | None = None,
    runtime: Runtime | None = None,
    unit: str = "cell",
    input_size: int | None = None,
    return_embeddings: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    runner: ContextRunner | None = None,
) -> PlatePredictions:
    """Predict every cell of one or more plates with plate-context batch-norm statistics.

    Parameters
    ----------
    models
        A classifier (or an ensemble whose probabilities are averaged).  Moved
        to ``runtime.device``; its weights and statistics are left unchanged.
    images
        ``(n, C, h, w)`` raw-intensity crops (or tiles), row ``i`` = table row ``i``.
    table
        Per-cell table with ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Role``.
    classes
        Class names in the order of the model's outputs.
    method
        The test-time method (:class:`Method`).
    contexts
        How the contexts are drawn (:class:`ContextSpec`; default: the method's).
    runtime
        Device, batch size, AMP (:class:`Runtime`; default: ``auto`` device).
    unit
        What a row is (``cell`` or ``site``): sets the fewest controls a plate
        needs unless ``contexts.min_controls`` does.
    input_size
        Centre-crop images to this size first (the checkpoint's ``input_size``).
    return_embeddings, progress, cancel
        See :func:`predict_contexts`.
    runner
        What runs the planned contexts (a :class:`ContextRunner`, given the
        runtime as one): None, :func:`adapt_contexts` in this process; or one
        that returns the same outputs in the same order (e.g. as dask tasks,
        :mod:`phenoadapt.pipeline.context_tasks`).

    Raises
    ------
    ContextError
        Missing or too few controls (unless ``allow_fallback``), NaN or constant
        crops, or images that do not match the table.
    """
    members = [models] if isinstance(models, nn.Module) else list(models)
    classes = tuple(str(c) for c in classes)
    spec = contexts or ContextSpec()
    runtime = runtime or Runtime()
    for model in members:
        n_out = getattr(model, "num_classes", len(classes))
        if n_out != len(classes):
            raise ValueError(
                f"The model has {n_out} outputs but {len(classes)} classes were given."
            )
    runtime.place(members)
    check_images(images, table)
    planned = spec.plan(table, method, unit=unit)
    outputs = (runner or adapt_contexts)(
        members, images, planned, runtime, input_size=input_size,
        return_embeddings=return_embeddings, progress=progress, cancel=cancel,
    )  # fmt: skip
    n = len(table)
    probs = np.full((n, len(classes)), np.nan)
    method_of = np.full(n, None, dtype=object)
    embeddings = None
    for out in outputs:
        probs[out.context.predict] = out.probabilities
        method_of[out.context.predict] = out.context.method.value
        if out.embeddings is not None:
            if embeddings is None:
                embeddings = np.full((n, out.embeddings.shape[1]), np.nan, dtype=np.float32)
            embeddings[out.context.predict] = out.embeddings
    cells = _cell_table(table, classes, probs, method_of)
    methods = {ctx.plate: ctx.method for ctx in planned}
    return PlatePredictions(cells, summarize_wells(cells, classes), methods, classes, embeddings)


def _cell_table(
    table: pd.DataFrame, classes: tuple[str, ...], probs: np.ndarray, method_of: np.ndarray
) -> pd.DataFrame:
    keep = [c for c in table.columns if schema.is_metadata(c)]
    keep += [
        c for c in (schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X) if c in table.columns
    ]
    cells = table[keep].copy()
    cells[METHOD_COLUMN] = method_of
    pcols = prob_columns(classes)
    cells[pcols] = probs
    predicted = np.isfinite(probs).all(axis=1)
    best = np.where(predicted, np.nan_to_num(probs).argmax(axis=1), 0)
    cells[schema.PREDICTION] = np.where(predicted, np.asarray(classes, dtype=object)[best], None)
    cells[schema.CONFIDENCE] = np.where(predicted, np.nan_to_num(probs).max(axis=1), np.nan)
    cells[schema.UNCERTAINTY] = np.where(
        predicted, normalized_entropy(np.nan_to_num(probs, nan=1.0)), np.nan
    )
    return cells


__all__ = [
    "CONTEXT_CHOICES",
    "DEFAULT_CONTEXT",
    "DEFAULT_CONTEXT_SIZE",
    "DEFAULT_METHOD",
    "METHODS",
    "METHOD_COLUMN",
    "Context",
    "ContextChoice",
    "ContextOutput",
    "ContextRunner",
    "ContextSpec",
    "MIN_CONTROLS",
    "Method",
    "MethodInfo",
    "PlatePredictions",
    "bad_images",
    "check_images",
    "context_from_cells",
    "context_outputs",
    "normalized_entropy",
    "parse_context",
    "parse_method",
    "plan_contexts",
    "predict_contexts",
    "predict_plate",
    "prob_columns",
    "run_contexts",
    "Runtime",
    "adapt_contexts",
    "summarize_wells",
]
