"""How much do the collapse metrics add to a clean forward pass over the same images?

Budget: at most 10 % on top of ``model(images)``. Three timings, interleaved repeat by repeat so that
load on a shared machine hits all of them alike, reported as medians:

* ``forward``: ``model(images)`` under ``no_grad`` (the fused attention kernel);
* ``token_cosine only``: the collapse pass with ``--metrics token_cosine`` (``forward_blocks`` plus
  the O(N·C) cosine identity on every layer);
* ``full default``: token cosine, attention entropy (``logsumexp(s) − Σ p s`` from the forward
  pass's own q and k, via the fused kernel on CPU) and effective rank (one float64 Gram product and
  one batched eigensolver call for all layers, one spectrum per image and layer).

Each collapse timing replaces the forward pass (it computes the same blocks), so its overhead is
``median(collapse) / median(forward) − 1``.

Run: ``python benchmarks/bench_collapse.py [--model deit-micro-elliptical] [--batch 128] [--repeats 15]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ellrobust.collapse import CollapseConfig, CollapseMetric, collapse_metrics
from ellrobust.models import load_model

BUDGET = 0.10


def main() -> None:
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
    cheap = CollapseConfig(metrics=(CollapseMetric.TOKEN_COSINE,))
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
            overhead = median / base - 1
            verdict = "within" if overhead <= BUDGET else "OVER"
            line += f"   ratio {median / base:.3f}   overhead {overhead:+.1%} ({verdict} the {BUDGET:.0%} budget)"
        print(line)


if __name__ == "__main__":
    main()
