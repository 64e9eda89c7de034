"""AutoAttack (standard version) in ellrobust: where its time goes, and against the reference implementation.

On the shipped digits models (``deit-elliptical`` and ``deit``), the first N test images, one budget:

* ``autoattack`` as the engine runs it (:func:`ellrobust.attacks.perturb`, one batch): wall time,
  robust accuracy, and its cascade's breakdown (seconds, images attacked and broken per component);
* each component alone (APGD-CE, APGD-T, FAB-T, Square with AutoAttack's settings) on every image
  the model classifies correctly (``--no-alone`` skips them);
* with ``--reference PATH``, Croce & Hein's reference (a local checkout of fra31/auto-attack;
  ``AutoAttack(version="standard")``, same eps, seed, images and model): both times, their ratio,
  and both robust accuracies in images. The target: ellrobust ≤ 0.5 × the reference's time, robust
  accuracy within one image of it.

Wall time is what the targets are about; CPU time (all threads) is printed next to it, because on a
shared machine it varies far less. Compile warm-up stays out of the figures: each model is attacked
once, untimed, on a few images first (on CUDA that compiles the elliptical attention's states), and
any compilation left inside a timed run is printed and subtracted. Nothing is downloaded: the
reference must already be on disk.

    python benchmarks/bench_autoattack.py [--n 120] [--eps 2/255] [--device cpu] [--reference /tmp/aa] [--no-alone]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch

from ellrobust.attacks import ATTACKS, make_request, perturb
from ellrobust.core.allocator import keep_freed_memory
from ellrobust.core.parsing import parse_fraction
from ellrobust.core.precision import Precision, precision_scope
from ellrobust.data import load_dataset
from ellrobust.models import compiled, load_model

MODELS = ("deit-elliptical", "deit")
T = TypeVar("T")


def timed(fn: Callable[[], T], device: str) -> tuple[T, float, float]:
    """``fn()``, its wall seconds and its CPU seconds (every thread of this process), compilation excluded.

    The elliptical attention compiles a graph the first time it meets a new state (on CUDA); the
    seconds those calls took are counted by :data:`ellrobust.models.compiled.STATS` and taken out of
    both figures, and printed.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    compiling = compiled.STATS.compile_seconds
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    spent = compiled.STATS.compile_seconds - compiling
    if spent > 0:
        print(f"  (compilation inside a timed run: {spent:.1f} s, not counted)")
    return out, wall - spent, max(0.0, cpu - spent)


def robust_images(model, adv: torch.Tensor, labels: torch.Tensor) -> int:
    """Images still classified correctly, judged as the engine judges them: a strict fp32 forward pass."""
    with torch.no_grad(), precision_scope(Precision.FP32, adv.device):
        return int((model(adv).argmax(1) == labels).sum())


def reference_autoattack(
    path: str, model, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, device: str
) -> tuple[torch.Tensor, dict]:
    """fra31/auto-attack's standard evaluation of ``x`` in one batch, and its seconds per attack.

    The reference logs the cumulative time after each attack ("robust accuracy after FAB-T: …
    (total time 848.9 s)"); its log is captured and read back into seconds per attack.
    """
    if path not in sys.path:
        sys.path.insert(0, path)
    from autoattack import AutoAttack

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        attack = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, verbose=True, device=device)
        adv = attack.run_standard_evaluation(x, y, bs=max(250, len(x)))
    for line in log.getvalue().splitlines():
        if line.startswith("Warning"):
            print(f"reference: {line}")
    seconds, before = {}, 0.0
    for name, total in re.findall(r"robust accuracy after ([\w-]+): .*\(total time ([\d.]+) s\)", log.getvalue()):
        seconds[name.lower()] = float(total) - before
        before = float(total)
    return adv, seconds


def main() -> None:
    keep_freed_memory()  # the allocation policy of the CLI's process, so the figures are the CLI's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120, help="images (the first N of the digits test split)")
    parser.add_argument("--eps", default="2/255")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--reference", metavar="PATH", help="a local checkout of fra31/auto-attack to run side by side")
    parser.add_argument(
        "--alone", action=argparse.BooleanOptionalAction, default=True, help="also run each component alone"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    eps, device = parse_fraction(args.eps), args.device
    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(args.n)]).to(device)
    y = torch.stack([torch.as_tensor(data.dataset[i][1]) for i in range(args.n)]).to(device)
    request = make_request("autoattack")
    hardware = (
        torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"device: {hardware}; {args.n} digits; eps {args.eps}; autoattack {request.params_json()}")
    totals = {"ellrobust": 0.0, "reference": 0.0}
    for name in args.models.split(","):
        model = load_model(name).to(device).eval()
        clean = robust_images(model, x, y)
        perturb(model, request, x[:4], y[:4], eps=eps, num_classes=10, seed=args.seed)  # warm-up: compiles, untimed
        info: dict = {}
        adv, wall, cpu = timed(
            partial(perturb, model, request, x, y, eps=eps, num_classes=10, seed=args.seed, info=info), device
        )
        totals["ellrobust"] += wall
        ours = robust_images(model, adv, y)
        print(f"\n## {name}: clean {clean}/{args.n}")
        print(f"ellrobust autoattack: robust {ours}/{args.n} images, {wall:.1f} s wall ({cpu:.1f} s CPU)")
        for component, stats in info["components"].items():
            share = stats["seconds"] / wall if wall else 0.0
            print(
                f"  {component:8s} {stats['seconds']:7.1f} s ({share:4.0%})  "
                f"attacked {stats['attacked']:4d}  broken {stats['broken']:4d}"
            )
        if args.alone:
            with torch.no_grad(), precision_scope(Precision.FP32, x.device):
                correct = torch.where(model(x).argmax(1) == y)[0]
            cascade = ATTACKS.get("autoattack").factory(model, eps, dict(request.params), 10, args.seed)
            print(f"each component alone, on the {len(correct)} images classified correctly:")
            for component, attack in cascade.components:
                adv_c, wall_c, cpu_c = timed(partial(attack.run, x[correct], y[correct]), device)
                left = robust_images(model, adv_c, y[correct])
                print(f"  {component:8s} robust {left:4d}/{args.n}  {wall_c:7.1f} s wall ({cpu_c:.1f} s CPU)")
        if args.reference:
            (adv_r, parts), wall_r, cpu_r = timed(
                partial(reference_autoattack, args.reference, model, x, y, eps, args.seed, device), device
            )
            totals["reference"] += wall_r
            theirs = robust_images(model, adv_r, y)
            print(f"reference autoattack: robust {theirs}/{args.n} images, {wall_r:.1f} s wall ({cpu_r:.1f} s CPU)")
            for component, seconds in parts.items():
                print(f"  {component:8s} {seconds:7.1f} s ({seconds / wall_r:4.0%})")
            verdict = "within one image" if abs(ours - theirs) <= 1 else "DIFFERENT by more than one image"
            print(
                f"ellrobust / reference: {wall / wall_r:.2f} wall, {cpu / cpu_r:.2f} CPU (target ≤ 0.5); "
                f"robust {ours} vs {theirs} images: {verdict}"
            )
    if args.reference:
        ratio = totals["ellrobust"] / totals["reference"]
        print(
            f"\nall models: ellrobust {totals['ellrobust']:.1f} s, reference {totals['reference']:.1f} s wall: "
            f"ratio {ratio:.2f} (target ≤ 0.5)"
        )


if __name__ == "__main__":
    main()
