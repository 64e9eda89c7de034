"""What a per-image minimal norm costs: FMN and a PGD-10 bisection against PGD-10 at one budget.

On the shipped digits test images with ``deit-elliptical``, side by side in one run, each on the same
batches:

* PGD-10 at ``--eps`` (default 8/255, the largest budget of the README's quick start), the unit of
  cost: one robust-accuracy figure;
* PGD-10 at each budget of the quick start's sweep (1, 2, 4, 8 /255): what a curve costs today;
* FMN, L∞, ``--steps`` iterations (default 100): one gradient pass and one fp32 verdict forward each;
* bisection with PGD-10 (L∞, eps_max 16/255, resolution 1/255/16: the top step and 8 halvings).

Printed per method (medians over ``--repeats`` passes): seconds per image, wall and process CPU time,
each with its ratio to PGD-10 at ``--eps`` (on a shared CPU both drift with the other load: compare
the ratios of one run); then the answers themselves (median ε*, censored images, robust accuracy at
``--eps`` read off each curve, next to PGD-10's). Every method runs once, untimed, on a few images
first (allocator, kernels, compilation on CUDA); on CUDA each clock is read after a synchronisation.

    python benchmarks/bench_min_norm.py [-n 64] [--steps 100] [--batch 64] [--eps 8/255] [--repeats 1] [--device cpu]

``--images-needed`` answers another question: how many images does each paired test need? On the
shipped models (``--model`` against ``--baseline``, default deit-elliptical vs deit; ``-n`` default
200), it measures every image's ε* for both (FMN L∞, ``--steps``, eps_max 16/255) and PGD-10's
correctness at each budget of the quick start (1, 2, 4, 8 /255), then, per budget,
:func:`ellrobust.stats.minimal_budgets.images_needed` draws ``--repeats`` (default 200) subsets of each
size of ``--sizes`` and prints the power of the sign test on ε* next to McNemar's at that budget, and
the smallest size reaching 80 % power for each (">" the largest size when none does), at Holm's
first-step level α/m with m = ``--family-size`` (default 6: the family such a run holds, clean, the
four PGD budgets and the sign test on ε*).

    python benchmarks/bench_min_norm.py --images-needed [-n 200] [--steps 100] [--repeats 200] [--sizes 25,50,100,200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ellrobust.attacks import MinimalResult, bisect, fmn, registry_attack
from ellrobust.attacks.bisection import DEFAULT_RESOLUTION
from ellrobust.core.allocator import keep_freed_memory
from ellrobust.core.parsing import parse_fraction
from ellrobust.core.precision import fp32_predictions
from ellrobust.data import load_dataset
from ellrobust.models import load_model
from ellrobust.stats.minimal_budgets import images_needed, robust_curve

SWEEP = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
EPS_MAX = 16 / 255


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run: Callable[[], object], device: str) -> tuple[float, float, object]:
    """Wall seconds, process CPU seconds and the result of ``run()``."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def load_images(n: int | None, device: str):
    """The first ``n`` digits test images and labels on ``device``, and the dataset."""
    data = load_dataset("digits")
    n = min(n, len(data))
    x = torch.stack([data.dataset[i][0] for i in range(n)]).to(device)
    y = torch.stack([torch.as_tensor(data.dataset[i][1]) for i in range(n)]).to(device)
    return x, y, data


def needed_images(args: argparse.Namespace) -> None:
    """``--images-needed``: the power of the sign test on ε* against McNemar's at each quick-start budget."""
    x_all, y_all, data = load_images(args.n if args.n is not None else 200, args.device)
    n = len(y_all)
    torch.manual_seed(0)
    pgd = registry_attack("pgd", num_classes=data.num_classes, params={"steps": 10})
    stars, flags, correct = {}, {}, {}
    for name in (args.model, args.baseline):
        model = load_model(name).to(args.device).eval()
        parts, right = [], {e: [] for e in SWEEP}
        for start in range(0, n, args.batch):
            x, y = x_all[start : start + args.batch], y_all[start : start + args.batch]
            parts.append(fmn(model, x, y, norm="Linf", steps=args.steps, eps_max=EPS_MAX))
            for e in SWEEP:
                right[e].append((fp32_predictions(model, pgd(model, x, y, e)) == y).cpu())
        stars[name] = torch.cat([r.eps_star for r in parts]).cpu().numpy()
        flags[name] = torch.cat([r.censored for r in parts]).cpu().numpy()
        correct[name] = {e: torch.cat(v).numpy() for e, v in right.items()}
    sizes = sorted({m for m in (int(v) for v in args.sizes.split(",")) if 1 <= m <= n}) or sorted(
        {max(1, n // 4), max(1, n // 2), n}
    )
    a, b = args.model, args.baseline
    print(f"{a} vs {b}: {n} digits test images; FMN L∞ {args.steps} steps, eps_max 16/255; PGD-10 at fixed ε")
    print(f"censored: {a} {int(flags[a].sum())}, {b} {int(flags[b].sum())} of {n}; {args.repeats} subsets per size")
    header = "  ".join(f"{m:>11}" for m in sizes)
    for e in SWEEP:
        found = images_needed(
            stars[a],
            flags[a],
            stars[b],
            flags[b],
            correct[a][e],
            correct[b][e],
            eps_max=EPS_MAX,
            sizes=sizes,
            seed=0,
            repeats=args.repeats,
            family_size=args.family_size,
        )

        def needed(m: int | None) -> str:
            return str(m) if m is not None else f"> {sizes[-1]}"

        print(f"{f'ε {e * 255:g}/255: power at size':<26}{header}   (Holm's α/m, m = {args.family_size})")
        print(f"{'  sign test on ε*':<26}{'  '.join(f'{p:11.2f}' for p in found.sign_power)}")
        print(f"{'  McNemar at this ε':<26}{'  '.join(f'{p:11.2f}' for p in found.mcnemar_power)}")
        print(
            f"  images for {found.power:.0%} power: sign test {needed(found.sign_needed)}, "
            f"McNemar {needed(found.mcnemar_needed)}"
        )


def main() -> None:
    keep_freed_memory()  # the allocation policy of the CLI's process, so the figures are the CLI's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n",
        type=int,
        default=None,
        help="images (the first N of the digits test split; 64, or 200 with --images-needed)",
    )
    parser.add_argument("--steps", type=int, default=100, help="FMN iterations")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eps", default="8/255", help="PGD-10's budget, the unit of cost")
    parser.add_argument("--model", default="deit-elliptical")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed passes over the images, medians printed (default 1); with --images-needed, subsets per size (200)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images-needed", action="store_true", help="power of the sign test on ε* vs McNemar")
    parser.add_argument("--baseline", default="deit", help="with --images-needed: model B")
    parser.add_argument("--sizes", default="25,50,100,200", help="with --images-needed: subset sizes (at most -n)")
    parser.add_argument(
        "--family-size", type=int, default=6, help="with --images-needed: Holm family size m (tests at α/m)"
    )
    args = parser.parse_args()
    if args.images_needed:
        args.repeats = args.repeats if args.repeats is not None else 200
        needed_images(args)
        return
    args.repeats = args.repeats if args.repeats is not None else 1
    eps = parse_fraction(args.eps)
    x_all, y_all, data = load_images(args.n if args.n is not None else 64, args.device)
    n = len(y_all)
    torch.manual_seed(0)
    model = load_model(args.model).to(args.device).eval()
    pgd = registry_attack("pgd", num_classes=data.num_classes, params={"steps": 10})

    methods: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        f"PGD-10 at {args.eps}": lambda x, y: pgd(model, x, y, eps),
        f"PGD-10 at the {len(SWEEP)} budgets of the quick start": lambda x, y: [pgd(model, x, y, e) for e in SWEEP],
        f"FMN L∞, {args.steps} steps": lambda x, y: fmn(model, x, y, norm="Linf", steps=args.steps, eps_max=EPS_MAX),
        "bisection with PGD-10, resolution 1/255/16": lambda x, y: bisect(
            pgd, model, x, y, norm="Linf", eps_max=EPS_MAX, resolution=DEFAULT_RESOLUTION
        ),
    }
    for run in methods.values():  # warm-up, untimed
        run(x_all[:4], y_all[:4])

    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        outputs: dict[str, list[object]] = {name: [] for name in methods}
        for name in methods:
            wall[name].append(0.0)
            cpu[name].append(0.0)
        for start in range(0, n, args.batch):
            x, y = x_all[start : start + args.batch], y_all[start : start + args.batch]
            for name, run in methods.items():  # side by side, batch by batch
                w, c, out = timed(lambda run=run, x=x, y=y: run(x, y), args.device)
                wall[name][-1] += w
                cpu[name][-1] += c
                outputs[name].append(out)

    device = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"device: {device}; model {args.model}; {n} digits test images, batches of {args.batch}")
    unit = next(iter(methods))
    unit_wall, unit_cpu = statistics.median(wall[unit]) / n, statistics.median(cpu[unit]) / n
    for name in methods:
        w, c = statistics.median(wall[name]) / n, statistics.median(cpu[name]) / n
        ratios = (
            f"{w * 1e3:8.1f} ms/image wall ({w / unit_wall:5.2f}× PGD-10), {c * 1e3:8.1f} ms CPU ({c / unit_cpu:5.2f}×)"
        )
        print(f"{name:<46} {ratios}")

    labels = [y_all[start : start + args.batch] for start in range(0, n, args.batch)]
    pgd_out = outputs[unit]
    pgd_robust = sum(int((fp32_predictions(model, adv) == y).sum()) for adv, y in zip(pgd_out, labels, strict=True)) / n
    print(f"robust accuracy at {args.eps}: PGD-10 {pgd_robust:.3f}", end="")
    for name in list(methods)[2:]:
        parts: list[MinimalResult] = outputs[name]
        eps_star = torch.cat([r.eps_star for r in parts])
        censored = torch.cat([r.censored for r in parts])
        curve = float(robust_curve(eps_star.numpy(), censored.numpy(), [eps], eps_max=parts[0].eps_max)[0])
        print(f"; {name.split(',')[0]} {curve:.3f}", end="")
    print()
    for name in list(methods)[2:]:
        parts = outputs[name]
        eps_star = torch.cat([r.eps_star for r in parts])
        censored = torch.cat([r.censored for r in parts])
        broken = eps_star[(~censored) & (eps_star > 0)]
        median = f"{float(broken.median()) * 255:.3f}/255" if len(broken) else "none broken"
        print(f"{name}: median ε* of broken images {median}; censored at 16/255: {int(censored.sum())} of {n}")


if __name__ == "__main__":
    main()
