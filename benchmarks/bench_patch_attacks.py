"""The patch attacks on the shipped digits models: robust accuracy, the paired difference, and cost (CPU).

Run: ``PYTHONPATH=. python benchmarks/bench_patch_attacks.py [n]`` (default n = 200, the first n test
images). For each patch attack (``patch``, ``patch-fool``, ``attention-fool``, registered defaults) at 1
and 2 patches it prints the robust accuracy of ``deit`` and ``deit-elliptical`` (``m_grad`` detach, the
paper's metric), their paired difference elliptical − deit with its 95 % Tango score interval and exact
McNemar p (the statistics of the paired rows, :func:`ellrobust.stats.inference.paired_comparison`), and
each model's seconds per image as a multiple of PGD-10 at 8/255, timed in the same run. Every attack
starts from the same seed, so a rerun prints the same accuracies.
"""

from __future__ import annotations

import sys
import time

import torch

from ellrobust.attacks import make_request, perturb
from ellrobust.data import load_dataset
from ellrobust.models import load_model
from ellrobust.stats.inference import paired_comparison

MODELS = ("deit", "deit-elliptical")
PATCH_ATTACKS = ("patch", "patch-fool", "attention-fool")
BUDGETS = (1, 2)


def attack(model, name: str, eps: float, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-image correctness under ``name`` at ``eps`` and the seconds per image it took."""
    torch.manual_seed(0)
    start = time.perf_counter()
    adv = perturb(model, make_request(name), x, y, eps=eps, num_classes=10, seed=0)
    seconds = (time.perf_counter() - start) / len(x)
    with torch.no_grad():
        return (model(adv).argmax(1) == y).numpy(), seconds


def main(n: int) -> None:
    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(n)])
    y = torch.tensor([int(data.dataset[i][1]) for i in range(n)])
    models = {name: load_model(name) for name in MODELS}
    models["deit-elliptical"].set_m_grad("detach")
    pgd = {name: attack(model, "pgd", 8 / 255, x, y) for name, model in models.items()}
    with torch.no_grad():
        clean = {name: float((model(x).argmax(1) == y).float().mean()) for name, model in models.items()}
    print(f"n = {n} digits test images, {torch.get_num_threads()} CPU threads; ell = deit-elliptical (m_grad detach)")
    print(
        "clean accuracy: "
        + ", ".join(f"{name} {clean[name]:.3f}" for name in MODELS)
        + "; PGD-10 at 8/255: "
        + ", ".join(f"{name} {pgd[name][0].mean():.3f} robust, {pgd[name][1]:.4f} s/image" for name in MODELS)
    )
    header = f"{'attack':<15}{'k':>2} {'deit':>6} {'ell':>6}  {'ell − deit [95% CI]':<24}{'McNemar p':>10}"
    print(f"{header}  {'× PGD-10 (deit / ell)':>22}")
    for name in PATCH_ATTACKS:
        for k in BUDGETS:
            runs = {model: attack(models[model], name, float(k), x, y) for model in MODELS}
            cmp = paired_comparison(runs["deit-elliptical"][0], runs["deit"][0])
            interval = f"{cmp.difference:+.3f} [{cmp.ci_low:+.3f}, {cmp.ci_high:+.3f}]"
            cost = " / ".join(f"{runs[model][1] / pgd[model][1]:.1f}" for model in MODELS)
            print(
                f"{name:<15}{k:>2} {runs['deit'][0].mean():>6.3f} {runs['deit-elliptical'][0].mean():>6.3f}  "
                f"{interval:<24}{cmp.p_value:>10.3g}  {cost:>22}",
                flush=True,
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
