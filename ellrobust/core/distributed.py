"""torch.distributed, the way ellrobust uses it: shard batches, gather per-example outcomes.

Under ``torchrun`` (``WORLD_SIZE > 1``) every rank runs the same plan. The images of a unit are cut
into the same batches a single process would use, and batch ``b`` goes to rank ``b % world_size``:
each image is evaluated exactly once, nothing is padded, and because every batch is seeded from the
unit seed and its batch index, a batch sees the same images and the same random numbers whichever
rank runs it. Per-example outcomes are gathered onto every rank, so the results table equals the one
of a single-process run. Rank 0 alone writes files and shows progress.

Evaluation talks through gloo, on every device: its collectives carry pickled Python objects
(outcomes, collapse values), and joining a gloo group touches no GPU, so the run's worker pool forks
after it without inheriting a CUDA context. Each rank binds ``cuda:LOCAL_RANK`` only after the fork
(:meth:`DistInfo.bind_device`). Training all-reduces CUDA gradients: there nccl, on the rank's GPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False  # this process group was created by :func:`init_distributed` (and is left by :meth:`leave`)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, batch_index: int) -> bool:
        return batch_index % self.world_size == self.rank

    def device(self, requested: str) -> str:
        """``cuda`` becomes this rank's GPU; anything else is kept."""
        if requested == "cuda" and self.enabled:
            return f"cuda:{self.local_rank}"
        return requested

    def gather_values(self, values: dict[int, float | int], size: int, dtype=np.float64) -> np.ndarray:
        """Position → value pairs from every rank, as one array of ``size`` (each position set once)."""
        parts = [values]
        if self.enabled:
            parts = [None] * self.world_size
            dist.all_gather_object(parts, values)
        out = np.zeros(size, dtype=dtype)
        seen = np.zeros(size, dtype=bool)
        for part in parts:
            for pos, value in part.items():
                if seen[pos]:
                    raise RuntimeError(f"position {pos} evaluated twice across ranks")
                seen[pos] = True
                out[pos] = value
        return out

    def gather_objects(self, obj: object) -> list[object]:
        """One object per rank, in rank order (a list of one when not distributed)."""
        if not self.enabled:
            return [obj]
        parts: list[object] = [None] * self.world_size
        dist.all_gather_object(parts, obj)
        return parts

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def leave(self) -> None:
        """Destroy the process group this process joined (torch warns at exit about one left standing)."""
        if self.joined and dist.is_initialized():
            dist.destroy_process_group()

    def bind_device(self, requested: str) -> None:
        """Make this rank's GPU the current CUDA device (a first CUDA call: after every worker fork)."""
        if self.enabled and requested.startswith("cuda"):
            torch.cuda.set_device(self.local_rank)


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0: the process that talks to the terminal and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: str = "cpu", *, cuda_collectives: bool = False) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, once.

    Args:
        device: the device the job computes on.
        cuda_collectives: the collectives carry CUDA tensors (training's gradients): on a CUDA device
            the group is nccl and this rank's GPU is bound now. Otherwise the group is gloo and
            nothing here touches CUDA.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank=rank, world_size=world, local_rank=local, joined=not dist.is_initialized())
    if info.joined:
        nccl = cuda_collectives and device.startswith("cuda") and torch.cuda.is_available()
        if nccl:
            info.bind_device(device)
        dist.init_process_group(backend="nccl" if nccl else "gloo")
    return info


def batches(positions: Sequence[int], batch_size: int) -> list[list[int]]:
    """The fixed cut of a unit's positions into batches (the same in every process layout)."""
    return [list(positions[i : i + batch_size]) for i in range(0, len(positions), batch_size)]


def local_world_size() -> int:
    """Processes of this job on this node (torchrun sets ``LOCAL_WORLD_SIZE``); 1 outside torchrun."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
