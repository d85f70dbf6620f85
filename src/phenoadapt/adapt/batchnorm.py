"""Exact batch-norm statistics of a plate context, and a way to apply them temporarily.

Plate-context adaptation (AdaBN, ARM-BN, BEN, CS-ARM-BN) replaces each batch-norm
layer's running statistics with the mean and variance of its input over a
*context*: a set of images of one plate.  Those statistics must be the statistics
of the context, not an exponential moving average that depends on the order and
size of batches:

- when the whole context fits in one forward pass, one pass normalizes every
  layer with exactly the context's statistics and records them
  (:func:`context_statistics` with no chunking): on an accelerator the
  batch-norm layers run in training mode; on a CPU a hook computes each
  layer's float32 moments (two passes, or one blocked sweep about a shift for
  large activations) and the layer, in eval mode, normalizes with them
  (PyTorch's own CPU kernel accumulates in unvectorized float64 and cost as
  much as the convolutions of a cheap network);
- when it does not fit, layer ``k``'s input depends on the statistics of layers
  ``1..k-1``, so the layers are done one at a time in execution order: with
  layers ``1..k-1`` fixed to their (already exact) context statistics, every
  chunk is passed up to layer ``k`` (the pass stops there), its per-channel
  moments (float32 two-pass mean and squared deviations) are pooled in
  float64, and layer ``k``'s statistics are fixed.

Both give the same numbers up to float32 rounding.  The variance stored is the
*biased* (population) variance, the one train-mode batch norm normalizes with,
so eval-mode outputs under the context statistics equal train-mode outputs on
the context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import Cancelled
from ..nn.runtime import is_oom, iter_batches, to_device
from ..progress import CancelFn

# Layer name -> (mean, biased variance), float32 tensors on the model's device.
Statistics = dict[str, tuple[torch.Tensor, torch.Tensor]]


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has its input."""


def batchnorm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """The model's batch-norm layers by qualified name (in registration order).

    Raises
    ------
    ValueError
        If a layer keeps no running statistics (``track_running_stats=False``):
        such a layer always uses batch statistics and cannot hold a context's.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    for name, layer in layers.items():
        if layer.running_mean is None or layer.running_var is None:
            raise ValueError(
                f"Batch-norm layer {name!r} keeps no running statistics "
                "(track_running_stats=False); plate-context adaptation needs them."
            )
    return layers


def _chunk_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and sum of squared deviations (float64) of one chunk, and its count."""
    mean, var = _batch_moments(x)
    count = x.numel() // x.shape[1]
    return mean.double(), var.double() * count, count


def _pool_moments(
    parts: list[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of the union of chunks (Chan et al.'s pairwise formula).

    ``parts`` holds each chunk's mean, sum of squared deviations about that
    mean, and count.  Each chunk's moments are about its own mean, so pooling
    them (in float64) loses nothing to cancellation, unlike sums of squares.
    """
    means = torch.stack([m for m, _, _ in parts]).double()
    m2s = torch.stack([m2 for _, m2, _ in parts]).double()
    counts = torch.tensor([n for _, _, n in parts], dtype=torch.float64, device=means.device)
    counts = counts.view(-1, *([1] * (means.ndim - 1)))
    total = counts.sum()
    mean = (means * counts).sum(0) / total
    m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0)
    return mean.float(), (m2 / total).float()


@dataclass
class _Snapshot:
    """Everything adaptation touches, to put it back afterwards."""

    buffers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float | None]]
    training: dict[str, bool]

    @classmethod
    def take(cls, model: nn.Module) -> _Snapshot:
        buffers = {}
        for name, layer in batchnorm_layers(model).items():
            nbt = layer.num_batches_tracked
            buffers[name] = (
                layer.running_mean.detach().clone(),
                layer.running_var.detach().clone(),
                None if nbt is None else nbt.detach().clone(),
                layer.momentum,
            )
        training = {name: m.training for name, m in model.named_modules()}
        return cls(buffers, training)

    def restore(self, model: nn.Module) -> None:
        layers = batchnorm_layers(model)
        with torch.no_grad():
            for name, (mean, var, nbt, momentum) in self.buffers.items():
                layer = layers[name]
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
                if nbt is not None and layer.num_batches_tracked is not None:
                    layer.num_batches_tracked.copy_(nbt)
                layer.momentum = momentum
        for name, module in model.named_modules():
            module.training = self.training.get(name, module.training)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Restore the batch-norm buffers and train/eval flags of ``model`` on exit."""
    snapshot = _Snapshot.take(model)
    try:
        yield model
    finally:
        snapshot.restore(model)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


def _execution_order(
    model: nn.Module, probe: torch.Tensor, layers: dict[str, _BatchNorm]
) -> list[str]:
    """Names of the batch-norm layers in the order a forward pass calls them."""
    order: list[str] = []
    handles = [
        layer.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name))
        for name, layer in layers.items()
    ]
    try:
        with preserved_state(model), torch.no_grad():
            model.eval()
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    repeated = sorted({name for name in order if order.count(name) > 1})
    if repeated:
        raise ValueError(
            f"Batch-norm layers {repeated} are called more than once per forward pass; their "
            "context statistics would be ambiguous."
        )
    return order


#: Bytes of activations reduced at a time by :func:`_batch_moments` on a CPU: a block and
#: its deviations stay in a core's L2 (1 MiB was as fast as 256 KiB for ResNet-10 and
#: faster for ResNet-50, whose many small layers pay a per-block dispatch cost).
MOMENT_BLOCK_BYTES = 1 << 20


def _batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` over all dims but 1, in float32.

    Two passes (the mean, then the mean squared deviation from it) keep the
    variance accurate to float32 rounding even where a channel's mean is large
    against its spread, which a one-pass sum of squares in float32 is not.  A
    channels-last 4-D tensor is reduced as its ``(n * h * w, C)`` view, a
    column reduction that needs no copy and vectorizes over the channels.

    On a CPU a large tensor (over two blocks of :data:`MOMENT_BLOCK_BYTES`) is
    reduced in one sweep, block by block along its first axis, about a shift
    (:func:`_shifted_moments`), so each block's deviations stay in cache: two
    passes over a whole 512-cell activation (75 MB for 16 channels at 48 px),
    each with a full-size temporary, streamed it from memory four times and took
    about a third of a statistics pass (docs/throughput.md).
    """
    x = x.detach().float()
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view, no copy
    elif x.ndim > 2:
        # (n, C, h * w): the inner sums run over contiguous memory (a view when
        # contiguous), about a third faster than one reduction over dims 0, 2, 3.
        x = x.reshape(x.shape[0], x.shape[1], -1)
    if x.device.type != "cpu" or x.numel() * 4 <= 2 * MOMENT_BLOCK_BYTES:
        return _direct_moments(x)
    return _shifted_moments(x, max(1, MOMENT_BLOCK_BYTES // (4 * (x[0].numel() or 1))))


def _inner_sum(x: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of ``(n, C)`` or ``(n, C, m)`` over its other axes.

    The sum over ``n`` comes first: over contiguous rows it vectorizes across
    ``C * m`` columns, where a first sum over a short ``m`` (4-9 pixels deep in
    a ResNet) does not.
    """
    return x.sum(0) if x.ndim == 2 else x.sum(0).sum(-1)


def _direct_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-pass per-channel mean and biased variance of float32 ``(n, C)`` or ``(n, C, m)``."""
    count = x.numel() // x.shape[1]
    mean = _inner_sum(x) / count
    deviations = x - (mean if x.ndim == 2 else mean[:, None])
    return mean, _inner_sum(deviations.square_()) / count


def _shifted_moments(x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of ``x`` from one sweep over blocks of ``step`` rows.

    Each block's deviations from a shift (the first block's mean) are written to
    one scratch block that stays in cache; their sum and sum of squares are
    accumulated in float64.  The variance ``E[d^2] - E[d]^2`` loses nothing to
    cancellation while the shift is near the mean (within a few standard
    deviations: then relative errors stay near float32 rounding), which the
    mean of a block of whole images is.  A fresh full-size temporary instead
    would be memory the allocator takes from the system and faults in page by page.
    """
    shift = _inner_sum(x[:step]) / (x[:step].numel() // x.shape[1])
    centre = shift if x.ndim == 2 else shift[:, None]
    scratch = torch.empty((min(step, x.shape[0]), *x.shape[1:]), dtype=x.dtype)
    sums, squares = [], []
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        deviations = torch.sub(block, centre, out=scratch[: block.shape[0]])
        sums.append(_inner_sum(deviations))
        squares.append(_inner_sum(deviations.square_()))
    count = x.numel() // x.shape[1]
    mean_deviation = torch.stack(sums).double().sum(0) / count
    var = torch.stack(squares).double().sum(0) / count - mean_deviation.square()
    return (shift.double() + mean_deviation).float(), var.clamp_min(0).float()


def _one_pass(
    model: nn.Module,
    images: torch.Tensor,
    layers: dict[str, _BatchNorm],
    fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
) -> tuple[Statistics, Any]:
    """Context statistics from one pass over the whole context, and its outputs.

    Every batch-norm layer normalizes with the statistics of its own input over
    the whole context, as train-mode batch norm does, and records them: the
    outputs (``fn(model, images)``, default ``model(images)``) equal eval-mode
    outputs with the returned statistics installed (up to float32 rounding),
    so the context's own cells need no second pass.  The buffers are restored
    on return.  How the statistics are taken depends on the device
    (:func:`_cpu_pass`, :func:`_train_mode_pass`).
    """
    with preserved_state(model), torch.inference_mode():
        model.eval()  # dropout and the like off
        if images.device.type == "cpu":
            return _cpu_pass(model, images, layers, fn)
        return _train_mode_pass(model, images, layers, fn)


#: Widest batch-norm layer (channels) for which CPU statistics passes go channels-last.
NARROW_CHANNELS = 256


def _narrow(layers: dict[str, _BatchNorm]) -> bool:
    """Whether a network is narrow enough for channels-last statistics passes on a CPU.

    Measured on 512-cell contexts, one thread (docs/throughput.md): ResNet-10 width 16
    (16-128 channels) passes 10-25% faster channels-last, ResNet-50 width 64 (64-2048
    channels) about 15% slower, its wide convolutions preferring the default layout.
    The choice depends on the network only, so results stay deterministic.
    """
    return max((layer.num_features for layer in layers.values()), default=0) <= NARROW_CHANNELS


def _cpu_pass(
    model: nn.Module,
    images: torch.Tensor,
    layers: dict[str, _BatchNorm],
    fn: Callable[[nn.Module, torch.Tensor], Any] | None,
) -> tuple[Statistics, Any]:
    """The one pass on a CPU: float32 two-pass moments in a hook, eval-mode batch norm.

    PyTorch's train-mode batch norm on a CPU accumulates the statistics in
    float64 without vectorizing: over a 512-cell context it cost about as much
    as the convolutions of a cheap network.  Here a pre-hook computes each
    layer's mean and biased variance with :func:`_batch_moments` (float32, two
    passes: within ~1e-6 of the float64 figures) and writes them into the
    layer's running buffers, and the layer, in eval mode, normalizes with them:
    the same arithmetic as train mode.  The batches of narrow networks go
    channels-last (:func:`_narrow`), where those reductions are column sums
    over ``(n * h * w, C)``; the convolutions give the same numbers in either
    layout (to float32 rounding).
    """
    stats: Statistics = {}

    def record(name: str) -> Callable:
        def hook(module: _BatchNorm, args: tuple[torch.Tensor, ...]) -> None:
            mean, var = _batch_moments(args[0])
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
            stats[name] = (mean, var)

        return hook

    if images.ndim == 4 and _narrow(layers):
        images = images.contiguous(memory_format=torch.channels_last)
    return stats, _hooked_forward(model, images, layers, record, fn)


def _hooked_forward(
    model: nn.Module,
    images: torch.Tensor,
    layers: dict[str, _BatchNorm],
    record: Callable[[str], Callable],
    fn: Callable[[nn.Module, torch.Tensor], Any] | None,
) -> Any:
    """``fn(model, images)`` (default ``model(images)``) with ``record(name)`` as each
    layer's forward pre-hook, the hooks removed afterwards whatever happens."""
    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in layers.items()]
    try:
        return model(images) if fn is None else fn(model, images)
    finally:
        for handle in handles:
            handle.remove()


def _train_mode_pass(
    model: nn.Module,
    images: torch.Tensor,
    layers: dict[str, _BatchNorm],
    fn: Callable[[nn.Module, torch.Tensor], Any] | None,
) -> tuple[Statistics, Any]:
    """The one pass on an accelerator: train-mode batch norm (fused kernels) records them.

    Each layer records the statistics it normalizes with in its own running
    buffers: with ``momentum=1`` the update ``(1 - m) * running + m * batch``
    leaves exactly the batch's mean and unbiased variance, so no hook has to
    re-read every activation.  The unbiased variance is turned back into the
    biased one the layer normalized with.  Called inside :func:`preserved_state`.
    """
    counts: dict[str, int] = {}

    def record(name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            counts[name] = x.numel() // x.shape[1]

        return hook

    for layer in layers.values():
        layer.train()
        layer.momentum = 1.0
    outputs = _hooked_forward(model, images, layers, record, fn)
    stats: Statistics = {}
    for name, layer in layers.items():
        if name not in counts:
            continue  # never reached by the forward pass
        n = counts[name]
        unbiased_to_biased = (n - 1) / n if n > 1 else 1.0
        stats[name] = (
            layer.running_mean.detach().clone().float(),
            (layer.running_var.detach() * unbiased_to_biased).float(),
        )
    return stats, outputs


def _layer_by_layer(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    layers: dict[str, _BatchNorm],
    chunk_size: int,
    device: torch.device,
    cancel: CancelFn | None,
) -> Statistics:
    """Context statistics over chunks, one batch-norm layer at a time (see module docstring)."""
    n = int(images.shape[0])
    order = _execution_order(model, to_device(_as_tensor(images[:1]), device), layers)
    stats: Statistics = {}
    # On a CPU, channels-last chunks of a narrow network make each layer's moments column
    # reductions (see _batch_moments, _narrow); otherwise the layout is left as it is.
    rows_layout = device.type == "cpu" and _narrow(layers)
    with preserved_state(model), torch.no_grad():
        model.eval()
        for name in order:
            layer = layers[name]
            acc: list[tuple[torch.Tensor, torch.Tensor, int]] = []

            def grab(_module: nn.Module, args: tuple[torch.Tensor, ...], acc=acc) -> None:
                acc.append(_chunk_moments(args[0]))
                raise _StopForward

            handle = layer.register_forward_pre_hook(grab)
            try:
                for sl in iter_batches(n, chunk_size):
                    if cancel is not None and cancel():
                        raise Cancelled("Cancelled while computing batch-norm statistics.")
                    try:
                        model(to_device(_as_tensor(images[sl]), device, rows_layout))
                    except _StopForward:
                        pass
            finally:
                handle.remove()
            mean, var = _pool_moments(acc)
            stats[name] = (mean, var)
            # Later layers must see this layer normalized with the context statistics.
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
    return stats


def context_statistics(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    chunk_size: int | None = None,
    cancel: CancelFn | None = None,
) -> Statistics:
    """Exact per-layer batch-norm statistics of ``model`` over a context of images.

    Parameters
    ----------
    model
        Any module with batch-norm layers (left unchanged on return).
    images
        The context, ``(n, C, h, w)`` raw intensities (numpy or torch, any device).
    chunk_size
        Largest number of images per forward pass.  None or ``>= n``: one pass
        (falls back to chunks of half the size on an out-of-memory error).
        Smaller: layer-by-layer accumulation over chunks.
    cancel
        Polled between chunks; raises :class:`~phenoadapt.errors.Cancelled`.

    Returns
    -------
    dict
        Layer name -> (mean, biased variance), float32 tensors on the model's device.
        Computed in float32 without autocast, whatever the inference precision.
    """
    return statistics_and_outputs(model, images, chunk_size=chunk_size, cancel=cancel)[0]


def statistics_and_outputs(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
    *,
    chunk_size: int | None = None,
    channels_last: bool = False,
    cancel: CancelFn | None = None,
) -> tuple[Statistics, Any | None]:
    """Exact statistics of a context and, when one pass sufficed, the context's own outputs.

    The statistics are those of :func:`context_statistics`.  When the context
    fits one train-mode pass, that pass's outputs are returned as well: they
    equal what ``fn`` gives in eval mode with the statistics installed (up to
    float32 rounding), so the context's cells need not be forwarded again.

    Parameters
    ----------
    model, images, chunk_size, cancel
        As for :func:`context_statistics`.
    fn
        ``fn(model, batch)`` -> tensor or tuple of tensors (default: ``model(batch)``).
    channels_last
        Pass the images in the channels-last layout (faster convolutions on CUDA).

    Returns
    -------
    (statistics, outputs)
        ``outputs`` is what ``fn`` returned, on the model's device, or None when
        the statistics were accumulated layer by layer (or the model has no
        batch-norm layer): then forward the cells with :func:`use_statistics`.
    """
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("A batch-norm context needs at least one image.")
    layers = batchnorm_layers(model)
    if not layers:
        return {}, None
    device = _device_of(model)
    # Train-mode BatchNorm1d refuses a batch of one row (feature tables); the
    # layer-by-layer route runs in eval mode and gives the same (zero-variance) statistics.
    if n == 1 and images.ndim == 2:
        chunk_size = 1
    elif chunk_size is None or chunk_size >= n:
        try:
            batch = to_device(_as_tensor(images), device, channels_last)
            return _one_pass(model, batch, layers, fn)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc) or n == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            chunk_size = max(n // 2, 1)
    return _layer_by_layer(model, images, layers, max(int(chunk_size), 1), device, cancel), None


def apply_statistics(model: nn.Module, stats: Statistics) -> None:
    """Write context statistics into the running buffers of ``model`` (permanently).

    Layers missing from ``stats`` (never reached by a forward pass) keep theirs.
    """
    layers = batchnorm_layers(model)
    unknown = sorted(set(stats) - set(layers))
    if unknown:
        raise ValueError(f"Statistics name layers the model does not have: {unknown[:5]}.")
    with torch.no_grad():
        for name, (mean, var) in stats.items():
            layers[name].running_mean.copy_(mean)
            layers[name].running_var.copy_(var)


@contextlib.contextmanager
def use_statistics(model: nn.Module, stats: Statistics) -> Iterator[nn.Module]:
    """Evaluate ``model`` with context statistics; restore buffers and modes on exit.

    Inside the block the model is in eval mode and its batch-norm layers
    normalize with ``stats``.  Empty ``stats`` means the training running
    statistics (ERM).

    Examples
    --------
    >>> stats = context_statistics(model, context_images)        # doctest: +SKIP
    >>> with use_statistics(model, stats):                         # doctest: +SKIP
    ...     logits = model(images_to_predict)
    """
    with preserved_state(model):
        apply_statistics(model, stats)
        model.eval()
        yield model
