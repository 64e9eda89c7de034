"""The minimal number of patches per image: the patch threat model's counterpart of ε*.

Patch budgets are a grid (``--patches 1,2,4``), so an image's minimal number of patches is the smallest
budget at which any of the run's patch attacks broke it (the worst case over ``patch``, ``patch-fool``
and ``attention-fool``), 0 where the model misclassifies it clean, and the largest budget, *censored*,
where none did: the reading ε* gets from a grid of pixel budgets
(:func:`~ellrobust.stats.primary_endpoints.worst_case_budgets`). Its paired sign test is the patch
robustness claim's primary (:mod:`~ellrobust.measures.primary_claims`); here each model gets its median
and the number of censored images, per ``m_grad`` mode, as rows ``method == "worst-case"``.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from ellrobust.attacks.patches import PATCH_NORM
from ellrobust.measures.primary_claims import worst_budgets
from ellrobust.results import Metric, Outcomes, Row


def minimal_patch_rows(outcomes: list[Outcomes]) -> list[Row]:
    """Per model and ``m_grad`` mode with patch attacks: the median minimal number of patches, and the
    images no patch attack broke (``n_censored``)."""
    mine: dict[str, list[Outcomes]] = defaultdict(list)
    for o in outcomes:
        mine[o.model].append(o)
    rows = []
    for model, of_model in mine.items():
        for mg in dict.fromkeys(o.m_grad for o in of_model if o.eps is not None):
            worst = worst_budgets(of_model, mg, PATCH_NORM)
            if worst is None:
                continue
            params = json.dumps({"attacks": sorted(worst.methods), "norm": PATCH_NORM}, sort_keys=True)
            median = Row(model, Metric.MINIMAL_PATCHES_MEDIAN, float(np.median(worst.budgets)), "worst-case",
                         params=params, m_grad=mg)  # fmt: skip
            rows += [median, median.with_metric(Metric.N_CENSORED, float(worst.censored.sum()))]
    return rows
