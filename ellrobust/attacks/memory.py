"""How many images one model pass may hold: estimated from the memory that is free, halved on CUDA OOM.

Attacks that evaluate many points per image (SPSA: 2 × samples per image and iteration; FAB-T: one
pair per image and target class) would rather evaluate them in as few passes as possible: on a GPU a
small pass costs the same kernel launches as a large one. How many fit depends on the model, the
image size, the precision and what else holds memory:

* per image: the bytes of every leaf module's output for one image, in the attack's precision (bf16
  activations take half the bytes), times 2 for the inner tensors of attention and the like that no
  module returns, times 3 with an input gradient (autograd keeps the activations and the backward
  makes their gradients). The same estimate on every device: measuring the CUDA allocator's peak
  would mean resetting the process-wide peak statistic, which belongs to the user;
* free: ``torch.cuda.mem_get_info`` plus what the caching allocator holds unused, or ``MemAvailable``
  from ``/proc/meminfo`` on a CPU.

An estimate can be wrong (workspaces, fragmentation): :class:`PassSize` halves its limit whenever a
pass raises ``torch.cuda.OutOfMemoryError`` and retries, and keeps the smaller size from then on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from ellrobust.core.precision import Precision, precision_scope

T = TypeVar("T")

#: Share of the free memory a pass may plan to use: CUDA retries on OOM, a CPU cannot.
_SHARE = {"cuda": 0.8, "cpu": 0.5}
#: Without /proc/meminfo (macOS, Windows) a CPU is assumed to have this much free.
_FALLBACK_CPU_BYTES = 4 << 30


def available_bytes(device: torch.device) -> int:
    """Bytes a new allocation on ``device`` can use now."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_CPU_BYTES


def _leaf_output_bytes(model: nn.Module, image: torch.Tensor) -> int:
    """Sum of the outputs of every leaf module for one image: what a forward pass could keep alive."""
    total = [image.numel() * image.element_size()]

    def hook(_module, _inputs, output):
        for out in output if isinstance(output, tuple | list) else (output,):
            if isinstance(out, torch.Tensor):
                total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            model(image[:1])
    finally:
        for h in handles:
            h.remove()
    return total[0]


def pass_bytes_per_image(
    model: nn.Module, image: torch.Tensor, *, grad: bool, precision: Precision | str = Precision.FP32
) -> int:
    """Bytes one more image adds to a forward pass in ``precision`` (``grad``: forward and input-gradient pass)."""
    with precision_scope(precision, image.device):
        return (3 if grad else 2) * _leaf_output_bytes(model, image)


def images_per_pass(
    model: nn.Module,
    image: torch.Tensor,
    *,
    grad: bool,
    upper: int,
    extra_bytes_per_image: int = 0,
    precision: Precision | str = Precision.FP32,
) -> int:
    """How many images one pass in ``precision`` may hold on ``image``'s device, at most ``upper`` (at least 1).

    ``extra_bytes_per_image`` is what the attack itself keeps per image next to the pass.
    """
    per_image = pass_bytes_per_image(model, image, grad=grad, precision=precision) + extra_bytes_per_image
    budget = _SHARE.get(image.device.type, _SHARE["cpu"]) * available_bytes(image.device)
    return max(1, min(int(upper), int(budget // per_image)))


class PassSize:
    """A limit on the images per pass that halves on ``torch.cuda.OutOfMemoryError``.

    Args:
        limit: images per pass to start with (e.g. from :func:`images_per_pass`).
    """

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))

    def map(self, fn: Callable[[int, int], T], n: int) -> list[T]:
        """``fn(start, stop)`` over consecutive slices covering ``range(n)``, each at most ``limit`` long.

        ``fn`` must not change any state before it returns: a slice that runs out of memory is run
        again, in two halves.
        """
        out: list[T] = []
        start = 0
        while start < n:
            stop = min(n, start + self.limit)
            try:
                out.append(fn(start, stop))
                start = stop
                continue
            except torch.cuda.OutOfMemoryError:
                if stop - start == 1:
                    raise
                self.limit = max(1, (stop - start) // 2)
            # Outside the except block: there the traceback still holds the failed pass's tensors,
            # and the cache could not give their memory back.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return out
