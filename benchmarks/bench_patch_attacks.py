"""Cost per image of each patch attack against PGD-10, on the shipped digits models (CPU).

Run: ``PYTHONPATH=. python benchmarks/bench_patch_attacks.py [n]`` (default n = 16). Prints, per model and
attack at one patch (PGD-10 at 8/255), the robust accuracy, the seconds per image and the ratio to PGD-10.
Defaults are the registered ones (Patch-Fool: the official 250 Adam steps).
"""

from __future__ import annotations

import sys
import time

import torch

from ellrobust.attacks import make_request, perturb
from ellrobust.data import load_dataset
from ellrobust.models import load_model

ATTACKS = (("pgd", 8 / 255), ("patch", 1.0), ("patch-fool", 1.0), ("attention-fool", 1.0))


def main(n: int) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(n)])
    y = torch.tensor([int(data.dataset[i][1]) for i in range(n)])
    print(f"n = {n} digits images, {torch.get_num_threads()} CPU threads; eps: PGD 8/255, patch attacks 1 patch")
    print(f"{'model':<16} {'attack':<15} {'robust acc':>10} {'s / image':>10} {'× PGD-10':>9}")
    for name in ("deit", "deit-elliptical"):
        model = load_model(name)
        base = None
        for attack, eps in ATTACKS:
            start = time.perf_counter()
            adv = perturb(model, make_request(attack), x, y, eps=eps, num_classes=10, seed=0)
            per_image = (time.perf_counter() - start) / n
            base = base or per_image
            with torch.no_grad():
                accuracy = float((model(adv).argmax(1) == y).float().mean())
            print(f"{name:<16} {attack:<15} {accuracy:>10.3f} {per_image:>10.4f} {per_image / base:>9.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 16)
