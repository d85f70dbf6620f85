"""Multi-GPU and multi-node training with ``torchrun`` (``torch.distributed``, DDP).

Launch any training entry point under torchrun, e.g.::

    torchrun --nproc-per-node 4 -m phenoadapt train ...
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint host:29500 -m phenoadapt train ...

and call :func:`init_distributed` before :func:`~phenoadapt.train.trainers.train_model`.
Each process runs one device (``cuda:LOCAL_RANK`` with the NCCL backend; CPU
processes with Gloo).  The trainer then:

- draws the same optimizer steps on every rank (same seed) and gives each rank
  its share of the step's episodes (episode ``j`` goes to rank ``j mod world``);
  an episode is one plate, so plates are split across ranks;
- wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`, which
  sums gradients across ranks once per step (``no_sync`` during accumulation);
  the loss is scaled so the update equals the single-process update;
- validates with held-out plates split across ranks and all-reduced metrics,
  so every rank takes the same early-stopping decision;
- lets rank 0 alone write checkpoints.

**No SyncBatchNorm, on purpose.**  SyncBatchNorm would pool batch statistics
over all ranks, i.e. over several plates at once.  ARM-BN and CS-ARM-BN train
the network to classify after normalizing with the statistics of *one plate's*
context; pooling plates would erase exactly the plate-specific shift the method
learns to remove, and the network would meet a different normalization at test
time (one plate) than in training (many).  Each rank's batch-norm therefore
normalizes its own episode, as in single-process training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..nn.runtime import select_device


@dataclass(frozen=True)
class DistributedInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes files and logs)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(
    device: str | torch.device | None = "auto", backend: str | None = None, timeout_s: float = 1800
) -> DistributedInfo:
    """Join the torchrun job, or describe a single process when not launched by torchrun.

    Parameters
    ----------
    device
        ``"auto"``: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
    backend
        None: ``nccl`` for CUDA, ``gloo`` for CPU.
    timeout_s
        Collective-operation timeout.

    Returns
    -------
    DistributedInfo
    """
    if not launched_by_torchrun():
        return DistributedInfo(0, 1, 0, select_device(device), None)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    resolved = select_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    backend = backend or ("nccl" if resolved.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistributedInfo(rank, world, local_rank, resolved, backend)


def is_distributed() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a distributed job)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 outside a distributed job)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 or in a single-process run."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over ranks (the tensor itself in a single process)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (JSON-like values), in rank order."""
    if not is_distributed():
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=src)


def shutdown_distributed() -> None:
    """Leave the process group (call once at the end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
