"""``--deterministic``: the same command on the same GPU gives the same table, bit for bit.

On the CPU ellrobust's runs are deterministic already: every unit and batch is seeded from its key,
and the CPU kernels it uses reduce in a fixed order. On CUDA some kernels are not:

* cuDNN picks convolution algorithms by timing them (``cudnn.benchmark``) and some of them
  accumulate with atomics: the patch embedding's input gradient can differ in its last bits;
* the memory-efficient attention backward accumulates with atomics;
* cuBLAS splits large reductions across streams unless its workspace is fixed;
* some scans and scatters (FAB's ``cumsum``, index additions) have atomic CUDA kernels.

Bits that differ change an attack's path, and now and then whether an image at the boundary counts
as robust. :func:`deterministic_mode` switches torch to its deterministic kernels
(``torch.use_deterministic_algorithms``, which raises for an operation that has none), fixes cuBLAS's
workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS starts: before a process's first CUDA
matmul, which the engine guarantees) and turns cuDNN's autotuning off. It can cost speed on CUDA (not
measured here: no GPU was at hand) and is recorded in run.json (``config.deterministic``).

What stays different even then: another GPU model, driver, CUDA, cuDNN or torch version (other
kernels), another ``--batch-size`` (other reduction shapes), and bf16 or TF32 against fp32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ellrobust.core.errors import UsageError

#: cuBLAS's deterministic workspace setting (NVIDIA's documented value for CUDA ≥ 10.2).
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels inside the block (nothing changes when ``enabled`` is False); restores on exit."""
    if not enabled:
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as exc:
        if "does not have a deterministic implementation" not in str(exc):
            raise
        operation = str(exc).split(" does not have")[0].strip()
        raise UsageError(
            f"--deterministic: {operation} has no deterministic kernel in torch {torch.__version__} on this device; "
            "run without --deterministic (and expect last-bit differences between runs on a GPU)."
        ) from None
    finally:
        algorithms, warn_only, cudnn_deterministic, benchmark, workspace = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, benchmark
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
