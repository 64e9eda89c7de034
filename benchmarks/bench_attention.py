"""Cost of elliptical attention: forward+backward time of the elliptical DeiT over the baseline.

Same weights, same batch, interleaved repeats (baseline, elliptical, baseline, …) so that machine
noise hits both alike; the figure is the median of the per-repeat ratios. Target: ≤ 1.05.

    python benchmarks/bench_attention.py [--device cuda] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ellrobust.models import load_model


def step_time(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward + backward pass (synchronised on GPU)."""
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x).logsumexp(1).sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(arch: str, batch: int, repeats: int, device: str) -> tuple[float, float, float]:
    torch.manual_seed(0)
    base = load_model(arch).to(device)
    ell = load_model(f"{arch}-elliptical").to(device)
    ell.load_state_dict(base.state_dict())
    size = base.cfg.img_size
    x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    for _ in range(2):  # warm-up (allocator, kernels)
        step_time(base, x)
        step_time(ell, x)
    ratios, tb, te = [], [], []
    for _ in range(repeats):
        b = step_time(base, x)
        e = step_time(ell, x)
        tb.append(b)
        te.append(e)
        ratios.append(e / b)
    return statistics.median(tb), statistics.median(te), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"{'model':<12} {'image':>5} {'batch':>5} {'baseline ms':>12} {'elliptical ms':>14} {'median ratio':>13}")
    for arch, batch in (("deit-tiny", 64 if args.device != "cpu" else 8), ("deit-micro", 256 if args.device != "cpu" else 64)):
        tb, te, ratio = measure(arch, batch, args.repeats, args.device)
        size = load_model(arch).cfg.img_size
        print(f"{arch:<12} {size:>5} {batch:>5} {tb * 1e3:>12.1f} {te * 1e3:>14.1f} {ratio:>13.3f}")


if __name__ == "__main__":
    main()
