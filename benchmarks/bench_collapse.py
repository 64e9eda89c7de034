"""How much do the collapse metrics add to a clean forward pass over the same images?

Targets: token cosine alone ≤ 1.10 × ``model(images)``, the full default set ≤ 1.50 ×. Three timings,
interleaved repeat by repeat so that load on a shared machine hits all of them alike, reported as
medians:

* ``forward``: ``model(images)`` under ``no_grad`` (the fused attention kernel);
* ``token_cosine only``: the collapse pass with ``--metrics token_cosine`` (``forward_blocks`` plus
  the O(N·C) cosine identity on every layer);
* ``full default``: token cosine, attention entropy (``logsumexp(s) − Σ p s`` from the forward
  pass's own q and k, via the fused kernel on CPU) and effective rank (a float64 Gram product per
  layer, then one eigensolver call for all layers, split over the CPU cores).

Each collapse timing replaces the forward pass (it computes the same blocks), so its overhead is
``median(collapse) / median(forward) − 1``. A breakdown of the full set follows (Gram products,
eigenvalues, entropy), each timed alone on the same blocks.

On CUDA the effective rank's eigenvalues are solved on the host's cores (a batched ``eigvalsh`` of
matrices over 32×32 loops there, one cuSOLVER call each). ``--device cuda`` also times the two
alternatives on the GPU, ``eigvalsh`` in its loop and the batched approximate SVD ``gesvda``, with
their largest deviation from the library's effective rank, so that the choice can be made on figures.

Run: ``python benchmarks/bench_collapse.py [--model deit-micro-elliptical] [--batch 128] [--repeats 15]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ellrobust.core.allocator import keep_freed_memory
from ellrobust.measures.collapse_probe import CollapseConfig, collapse_metrics
from ellrobust.models import load_model
from ellrobust.results import Metric
from ellrobust.stats.collapse_metrics import (
    attention_entropy_qk,
    effective_rank_from_gram,
    symmetric_eigenvalues,
    token_gram,
)

TARGETS = {"token_cosine only": 1.10, "full default": 1.50}


def main() -> None:
    keep_freed_memory()  # the allocation policy of the CLI's process, so the figures are the CLI's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit-micro-elliptical")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model).to(args.device)
    size = model.cfg.img_size
    images = torch.rand(args.batch, 3, size, size, device=args.device)
    layers = tuple(range(model.cfg.depth))
    cheap = CollapseConfig(metrics=(Metric.TOKEN_COSINE,))
    full = CollapseConfig()

    def sync() -> None:
        if images.is_cuda:
            torch.cuda.synchronize()

    cases: dict[str, Callable[[], object]] = {
        "forward": lambda: model(images),
        "token_cosine only": lambda: collapse_metrics(model, images, cheap, layers),
        "full default": lambda: collapse_metrics(model, images, full, layers),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        for fn in cases.values():  # warm-up: allocator, kernels, LAPACK workspaces
            fn()
        for _ in range(args.repeats):
            for name, fn in cases.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    spread = {name: statistics.quantiles(ts, n=4)[::2] for name, ts in times.items()}  # [p25, p75]
    base = medians["forward"]
    print(
        f"{args.model} · batch {args.batch} · {size}px · depth {model.cfg.depth} · {args.device} · "
        f"{torch.get_num_threads()} threads · {args.repeats} interleaved repeats, medians"
    )
    for name, median in medians.items():
        low, high = spread[name]
        line = f"  {name:<18} {median * 1e3:8.1f} ms  (p25–p75 {low * 1e3:.1f}–{high * 1e3:.1f})"
        if name != "forward":
            ratio = median / base
            line += (
                f"   ratio {ratio:.3f}  (target ≤ {TARGETS[name]:.2f}: "
                f"{'met' if ratio <= TARGETS[name] else 'NOT met'})"
            )
        print(line)
    breakdown(model, images, layers, sync, args.repeats, base)


def breakdown(
    model, images: torch.Tensor, layers: tuple[int, ...], sync: Callable[[], None], repeats: int, forward: float
) -> None:
    """The full set's parts, each timed alone on the same blocks, as fractions of a forward pass."""
    with torch.no_grad():
        blocks = list(model.iter_blocks(images))
        tokens = torch.cat([blocks[i].x for i in layers])
        gram = token_gram(tokens)
        parts: dict[str, Callable[[], object]] = {
            "Gram products (float64)": lambda: token_gram(tokens),
            "eigenvalues (float64, CPU cores)": lambda: symmetric_eigenvalues(gram),
            "attention entropy": lambda: [attention_entropy_qk(blocks[i].q, blocks[i].k) for i in layers],
        }
        if images.is_cuda:
            parts["eigenvalues: cuda eigvalsh (loop)"] = lambda: torch.linalg.eigvalsh(gram)
            parts["singular values: cuda gesvda (batched)"] = lambda: torch.linalg.svdvals(
                tokens.double(), driver="gesvda"
            )
        print(f"  breakdown over {len(layers)} layers × {len(images)} images ({tuple(gram.shape[1:])} Gram matrices):")
        for name, fn in parts.items():
            fn()
            seconds = []
            for _ in range(max(3, repeats // 3)):
                sync()
                start = time.perf_counter()
                fn()
                sync()
                seconds.append(time.perf_counter() - start)
            median = statistics.median(seconds)
            print(f"    {name:<40} {median * 1e3:8.1f} ms  = {median / forward:.2f} × forward")
        if images.is_cuda:
            reference = effective_rank_from_gram(gram)
            s = torch.linalg.svdvals(tokens.double(), driver="gesvda")
            p = s / s.sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
            approx = torch.exp(-torch.xlogy(p, p).sum(-1)).float()
            print(
                "    gesvda's effective rank vs the library's: largest relative deviation "
                f"{((approx - reference).abs() / reference).max():.2e}"
            )


if __name__ == "__main__":
    main()
