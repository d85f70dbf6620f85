"""Where and how networks run: device choice, mixed precision, batched inference, OOM retry.

Every GPU path has a CPU twin: ``device="auto"`` picks CUDA when it is present,
mixed precision (bfloat16 autocast) and the channels-last memory layout are
used on CUDA only, and CPU runs plain float32 so results are reproducible.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch

from ..errors import Cancelled
from ..progress import CancelFn

T = TypeVar("T")


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device request.

    Parameters
    ----------
    device
        ``"auto"`` or None (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, or a :class:`torch.device`.

    Raises
    ------
    ValueError
        When CUDA is asked for but not available.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"Device {device!r} was requested but this machine has no usable CUDA GPU: "
            "use device='cpu' or 'auto'."
        )
    return resolved


def use_amp(device: torch.device, amp: bool | None = None) -> bool:
    """Whether to run under bfloat16 autocast: ``amp=None`` means yes on CUDA, no on CPU."""
    return device.type == "cuda" if amp is None else bool(amp and device.type == "cuda")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when ``enabled``; a no-op context otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device, channels_last: bool | None = None) -> bool:
    """Whether to use the channels-last layout: ``None`` means yes on CUDA (faster convs)."""
    return device.type == "cuda" if channels_last is None else bool(channels_last)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Move a float image batch to ``device``, channels-last when asked (4-D inputs only)."""
    x = x.to(device, dtype=torch.float32, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error of the accelerator (or of the CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def retry_on_oom(
    fn: Callable[[int], T],
    batch_size: int,
    *,
    min_batch_size: int = 1,
    on_retry: Callable[[int], None] | None = None,
) -> T:
    """Call ``fn(batch_size)``, halving the batch size after each out-of-memory error.

    Parameters
    ----------
    fn
        Work parameterized by a batch size; it must be safe to call again.
    batch_size
        First batch size to try.
    min_batch_size
        Give up (re-raise the error) when an OOM occurs at this size.
    on_retry
        Called with the new batch size before each retry (for logging).

    Returns
    -------
    Whatever ``fn`` returns.
    """
    size = max(int(batch_size), 1)
    while True:
        try:
            return fn(size)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc) or size <= min_batch_size:
                raise
            size = max(size // 2, min_batch_size)
            # Free the failed attempt's cached blocks before trying smaller batches.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warnings.warn(f"Out of memory; retrying with batch size {size}.", stacklevel=2)
            if on_retry is not None:
                on_retry(size)


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``batch_size`` items."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def forward_in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    cancel: CancelFn | None = None,
) -> tuple[torch.Tensor, ...]:
    """Apply ``fn`` to ``images`` batch by batch, without gradients, retrying OOMs.

    Parameters
    ----------
    fn
        Function of a device batch returning one tensor or a tuple of tensors
        whose first dimension is the batch.
    images
        ``(n, C, h, w)`` array or tensor, on any device.
    batch_size
        Largest batch; halved on out-of-memory errors.
    device, amp, channels_last
        Where and how to run (see :func:`select_device`, :func:`use_amp`).
    cancel
        Polled before each batch; raises :class:`~phenoadapt.errors.Cancelled`.

    Returns
    -------
    tuple of torch.Tensor
        Float32 CPU tensors, concatenated over batches.
    """
    device = torch.device(device)
    n = int(images.shape[0])

    def run(size: int) -> tuple[torch.Tensor, ...]:
        parts: list[tuple[torch.Tensor, ...]] = []
        for sl in iter_batches(n, size):
            if cancel is not None and cancel():
                raise Cancelled("Cancelled while running the network.")
            batch = images[sl]
            if not isinstance(batch, torch.Tensor):
                batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            with torch.no_grad(), autocast(device, amp):
                out = fn(to_device(batch, device, channels_last))
            out = out if isinstance(out, tuple) else (out,)
            parts.append(tuple(o.float().cpu() for o in out))
        if not parts:
            raise ValueError("forward_in_batches got no images.")
        return tuple(torch.cat(cols) for cols in zip(*parts, strict=True))

    return retry_on_oom(run, batch_size)
