"""Power at the level the verdict tests: exact power of the exact McNemar test at Holm's first-step α/m.

Prints, for a discordance rate ψ and n images, the difference Connor's formula calls detectable
(80 % power) at α and at α/m, and the exact power of each at α and at α/m
(:func:`ellrobust.stats.inference.mcnemar_power`). These are the figures the README's Statistics
section quotes (ψ = 0.05, n = 1 000, m = 10 and 80). No timing: pure arithmetic, seconds on a CPU.

    python benchmarks/holm_power.py [--psi 0.05] [--n 1000] [--family-sizes 1,10,80]
"""

from __future__ import annotations

import argparse

from ellrobust.stats.decisions import ALPHA, holm_level
from ellrobust.stats.inference import detectable_difference, mcnemar_power


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psi", type=float, default=0.05, help="discordance rate p10 + p01")
    parser.add_argument("--n", type=int, default=1000, help="images")
    parser.add_argument("--family-sizes", default="1,10,80", help="Holm family sizes m, comma-separated")
    args = parser.parse_args()
    sizes = [int(m) for m in args.family_sizes.split(",")]
    levels = [holm_level(m) for m in sizes]
    print(f"ψ = {args.psi:g}, n = {args.n}; exact power of the exact McNemar test at Holm's first-step α/m")
    header = "".join(f"{f'α/{m} = {level:.3g}':>18}" for m, level in zip(sizes, levels, strict=True))
    print(f"{'difference (Connor, 80 %)':<34}{header}")
    for m, level in zip(sizes, levels, strict=True):
        delta = detectable_difference(args.psi, args.n, alpha=level)
        powers = "".join(f"{mcnemar_power(delta, args.psi, args.n, alpha=a):>18.3f}" for a in levels)
        print(f"{f'{delta * 100:.2f} pp (at α/{m}, α = {ALPHA:g})':<34}{powers}")


if __name__ == "__main__":
    main()
