"""What run.json records beside the request: the environment, compile records and unit timings."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import torch

from ellrobust.core.version import __version__
from ellrobust.models import compiled as compiled_attention


def compile_record(start: dict) -> dict:
    """How this run's elliptical attention ran: compiled or eager, and the graphs it compiled (run.json ``attention``).

    ``compile_mode`` is ``ELLROBUST_COMPILE_ATTENTION`` (auto: compiled on CUDA only); the counts are this
    run's (the process's counters minus what they were when the run's units began).
    """
    now = compiled_attention.STATS.snapshot()
    counts = {k: now[k] - start[k] for k in ("graphs", "compile_seconds", "compiled_calls", "eager_calls")}
    return {
        "compile_mode": compiled_attention.compile_mode().value,
        "backend": os.environ.get(compiled_attention.BACKEND_ENV, compiled_attention.DEFAULT_BACKEND),
        "compiled": counts["compiled_calls"] > 0,
        **counts,
        "fallback": now["fallback"],
    }


#: Unit diagnostics that run.json lists per unit (time, work done, how attacks spent it, files written).
_TIMING_KEYS = (
    "seconds",
    "compile_seconds",
    "n_attacked",
    "components",
    "spsa_images_per_forward",
    "generated_images",
    "data_seconds",
    "model_seconds",
    "adversarial_file",
)


def unit_timings(extra: dict) -> dict:
    return {k: extra[k] for k in _TIMING_KEYS if k in extra}


def environment() -> dict:
    """Versions and hardware, recorded in every run folder."""
    env = {
        "ellrobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import torchattacks

        env["torchattacks"] = torchattacks.__version__
    except Exception:  # pragma: no cover - optional in exotic installs
        env["torchattacks"] = None
    env["torchvision"] = importlib.metadata.version("torchvision")
    try:
        env["timm"] = importlib.metadata.version("timm")  # the builder of timm: models; without importing it
    except importlib.metadata.PackageNotFoundError:
        env["timm"] = None
    return env
