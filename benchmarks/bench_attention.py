"""Cost of elliptical attention in an attack step: elliptical / baseline time per precision. Target: ≤ 1.05.

An attack step is what a gradient attack repeats: a forward pass and the gradient of the loss with
respect to the input images only (no parameter gradients), as torchattacks computes it. It runs
in each precision of :mod:`ellrobust.core.precision` (fp32, tf32, bf16 autocast) for DeiT-Tiny, -Small
and -Base at 224 px, once with the paper's detached metric (``m_grad detach``) and once with
gradients through it (``full``, the adaptive attack).

Same weights and the same batch for both models; repetitions are interleaved (baseline, elliptical
detach, elliptical full, baseline, …) so that machine noise hits all alike. Every figure is a
median over the repetitions: the milliseconds per step and the ratio to the baseline of the same
repetition. On CUDA the elliptical model is timed twice, with its metric compiled (the library's
default there) and eager (``ELLROBUST_COMPILE_ATTENTION=0``); elsewhere the library runs it eagerly.

    python benchmarks/bench_attention.py [--device cuda] [--batch-size 128] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ellrobust.core.allocator import keep_freed_memory
from ellrobust.core.precision import Precision, precision_scope
from ellrobust.models import compiled, load_model
from ellrobust.models.compiled import COMPILE_ENV

MODELS = ("deit-tiny", "deit-small", "deit-base")


def attack_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Forward pass and input gradient of the cross-entropy loss, like one PGD iteration."""
    x = x.detach().requires_grad_(True)
    torch.autograd.grad(F.cross_entropy(model(x).float(), y), x)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds for one call, synchronised on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def variants(device: torch.device) -> list[tuple[str, str, bool]]:
    """(label, m_grad, compiled) of the elliptical timings; compiled only where the library compiles."""
    paths = [True, False] if device.type == "cuda" else [False]
    return [(f"{mode} ({'compiled' if c else 'eager'})", mode, c) for mode in ("detach", "full") for c in paths]


def measure(arch: str, precision: Precision, batch: int, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Interleaved step times (seconds) of the baseline and each elliptical variant, per repetition."""
    torch.manual_seed(0)
    base = load_model(arch).to(device)
    ell = load_model(f"{arch}-elliptical").to(device)
    ell.load_state_dict(base.state_dict())
    size = base.cfg.img_size
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, base.num_classes, (batch,), device=device)

    def setting(mode: str, compiled: bool) -> Callable[[], None]:
        def apply() -> None:
            os.environ[COMPILE_ENV] = "1" if compiled else "0"
            ell.set_m_grad(mode)

        return apply

    # label -> (untimed setting, timed step)
    runs = {"baseline": (lambda: None, lambda: attack_step(base, x, y))}
    runs |= {label: (setting(mode, c), lambda: attack_step(ell, x, y)) for label, mode, c in variants(device)}
    times: dict[str, list[float]] = {label: [] for label in runs}
    with precision_scope(precision, device):
        for rep in range(repeats + 2):  # two warm-up rounds: allocator, kernel selection, compilation
            if rep == 2:
                graphs = compiled.STATS.graphs
            for label, (apply, step) in runs.items():
                apply()
                t = timed(step, device)
                if rep >= 2:
                    times[label].append(t)
    if compiled.STATS.graphs != graphs:  # every state compiles in the warm-up rounds; a later compile would be timed
        raise SystemExit(
            f"{compiled.STATS.graphs - graphs} graphs compiled inside the timed repetitions of {arch} {precision}"
        )
    return times


def main() -> None:
    keep_freed_memory()  # the allocation policy of the CLI's process, so the figures are the CLI's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 8 on a CPU")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="architectures (224 px DeiTs by default)")
    choices = [p.value for p in Precision]
    parser.add_argument("--precisions", nargs="+", default=choices, choices=choices)
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch_size or (128 if device.type == "cuda" else 8)
    saved_env = os.environ.get(COMPILE_ENV)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"
    print(f"device: {name}; torch {torch.__version__}; batch {batch}; median of {args.repeats} interleaved repeats")
    print("step: forward + gradient of the cross-entropy with respect to the input images")
    if device.type != "cuda" and "tf32" in args.precisions:
        print("note: a CPU has no TF32, so tf32 computes exactly as fp32 here (its rows measure the same thing twice)")
    print(f"{'model':<11} {'prec':<5} {'m_grad (path)':<19} {'baseline ms':>12} {'elliptical ms':>14} {'ratio':>6}")
    try:
        for arch in args.models:
            for precision in args.precisions:
                times = measure(arch, Precision(precision), batch, args.repeats, device)
                base = times.pop("baseline")
                for label, ell in times.items():
                    ratio = statistics.median(e / b for e, b in zip(ell, base, strict=True))
                    print(
                        f"{arch:<11} {precision:<5} {label:<19} {statistics.median(base) * 1e3:>12.1f} "
                        f"{statistics.median(ell) * 1e3:>14.1f} {ratio:>6.3f}",
                        flush=True,
                    )
    finally:
        if saved_env is None:
            os.environ.pop(COMPILE_ENV, None)
        else:
            os.environ[COMPILE_ENV] = saved_env


if __name__ == "__main__":
    main()
