"""Level and power of the claim rule (one primary per claim, Holm across claims) beside the 0.4 rule.

Simulated runs shaped like the example report (:mod:`ellrobust.stats.primary_simulation`): FGSM-, PGD-
and SPSA-like attacks at 4 ε, their transferred counterparts and an FMN-like minimal-norm method, each
under 2 m_grad modes; 15 × 5 corruption cells; the later-half token cosine. Prints

* under the null (the same model twice, independent noise per image; n = 200 like the example), the
  family-wise rate of any claim reading supported or contradicted, with its exact binomial 95 % CI,
  for the claim rule (sign-test and signed-rank robustness primary) and for the 0.4 rule (one Holm
  family of all m = 142 comparisons; its mCE and collapse claims judged by intervals at α);
* under two alternatives at n = 1 000 (a true 3 pp worst-case robust-accuracy difference at ε 2/255;
  a 0.1/255 shift of every correctly classified image's ε*), the power of the robustness claim: the
  claim rule with each primary (the budgets by sign or signed-rank test, or worst-case robust accuracy at
  2/255 by McNemar), beside the 0.4 rule's worst-case line, minimal-budget line, and any attack line
  (m_grad detach).

    python benchmarks/primary_power.py [--null-runs 2000] [--power-runs 1000] [--seed 0]

CPU only, about 3 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import binomtest

from ellrobust.stats.primary_endpoints import PrimaryTest
from ellrobust.stats.primary_simulation import (
    Alternative,
    RunShape,
    budget_endpoint,
    fixed_endpoint,
    scale_for_difference,
    simulate,
)

EPS = 2 / 255


def _rate(flags: np.ndarray) -> str:
    hits, runs = int(flags.sum()), flags.size
    ci = binomtest(hits, runs).proportion_ci(confidence_level=0.95, method="exact")
    return f"{hits / runs:6.3f}  (95 % CI {ci.low:.3f} … {ci.high:.3f}; {hits}/{runs})"


def _endpoints() -> dict:
    return {
        "claim rule, sign test on worst-case ε*": budget_endpoint(PrimaryTest.SIGN),
        "claim rule, signed-rank on worst-case ε*": budget_endpoint(PrimaryTest.SIGNED_RANK),
        "claim rule, McNemar at 2/255 (fixed budget)": fixed_endpoint(EPS),
    }


def _print_power(title: str, shape: RunShape, runs: int, alternative: Alternative, seed: int) -> None:
    found = simulate(shape, runs, seed=seed, alternative=alternative, endpoints=_endpoints())
    print(f"\n{title} (n = {shape.n}, {runs} runs): power of the robustness claim (supported)")
    for name, flags in found.claim_robust.items():
        print(f"  {name:<48}{_rate(flags)}")
    for key, name in (("worst", "worst-case line"), ("fmn", "FMN minimal-budget line"), ("robust", "any attack line")):
        print(f"  {'0.4 rule (m = 142), ' + name:<48}{_rate(found.old[key])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-runs", type=int, default=2000)
    parser.add_argument("--power-runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    null = simulate(RunShape(n=200), args.null_runs, seed=args.seed, endpoints=_endpoints())
    print(f"Null (the same model twice, n = 200, {args.null_runs} runs): any claim supported or contradicted")
    for name, flags in null.claim_any.items():
        print(f"  {name:<48}{_rate(flags)}")
    print(f"  {'0.4 rule (one Holm family, m = 142)':<48}{_rate(null.old['any'])}")
    big = RunShape(n=1000)
    scale = scale_for_difference(big, EPS, 0.03, seed=args.seed + 1)
    title = f"A true 3 pp worst-case difference at 2/255 (A's ε* × {scale:.3f})"
    _print_power(title, big, args.power_runs, Alternative(scale=scale), args.seed + 2)
    _print_power("A 0.1/255 ε* shift", big, args.power_runs, Alternative(shift=0.1 / 255), args.seed + 3)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
