"""The registry of attack sanity checks: every check named, registered once, and each able to pass and to fail."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ellrobust.attacks.sanity_checks import LARGE_EPS_METHOD, SANITY_CHECKS, gather, sanity_check, sanity_rows
from ellrobust.results import Metric, Row
from ellrobust.run.units import Unit

CTX = SimpleNamespace(indices=list(range(100)), data=SimpleNamespace(num_classes=10))
KEY = ("m", "", "bf16")  # the key every check applies to: its fp32 twin is the precision reference

#: Every check passes (each applies: two budgets, pgd and fgsm, spsa and pgd, a transfer, bf16 beside fp32).
HEALTHY = {
    "clean": 0.9,
    "bf16": {("fgsm", 0.01): 0.5, ("fgsm", 0.02): 0.3, ("pgd", 0.01): 0.4, ("pgd", 0.02): 0.2, ("spsa", 0.01): 0.6},
    "fp32": 0.0,  # fp32 accuracy = bf16's minus this
    "transferred": 0.7,  # pgd at 0.01 from another model
    "large": 0.05,  # pgd at the huge budget
    "perturbation": 0.01,  # largest, of pgd at 0.01
    "min_pixel": 0.0,
    "failure": dict(images=5, randomised=0.0, flipped=0, probabilities=False, zero_gradient=0, flat_loss=0),
}
#: Every check fails: robust above clean, fgsm rising with eps, pgd weaker than fgsm, spsa stronger than pgd,
#: transfer stronger than white-box, huge budget above chance, bf16 above fp32, perturbation outside eps and [0, 1],
#: and the failure probe found randomised outputs, probabilities, zero gradients and a loss that never moved.
BROKEN = {
    "clean": 0.5,
    "bf16": {("fgsm", 0.01): 0.3, ("fgsm", 0.02): 0.6, ("pgd", 0.01): 0.5, ("pgd", 0.02): 0.2, ("spsa", 0.01): 0.1},
    "fp32": 0.1,
    "transferred": 0.1,
    "large": 0.9,
    "perturbation": 0.05,
    "min_pixel": -0.1,
    "failure": dict(images=5, randomised=0.3, flipped=2, probabilities=True, zero_gradient=5, flat_loss=4),
}


def _run(case: dict) -> tuple[list[Row], list]:
    """Rows and attack diagnostics of one model attacked in bf16 and fp32."""
    rows = [Row("m", Metric.CLEAN_ACCURACY, case["clean"], "clean")]
    for (method, eps), value in case["bf16"].items():
        rows.append(Row("m", Metric.ROBUST_ACCURACY, value, method, eps=eps, precision="bf16"))
        rows.append(Row("m", Metric.ROBUST_ACCURACY, value - case["fp32"], method, eps=eps, precision="fp32"))
    source = json.dumps({"source": "other"})
    rows.append(Row("m", Metric.TRANSFER_ACCURACY, case["transferred"], "pgd", source, eps=0.01, precision="bf16"))
    extra = {"n_attacked": 5, "max_perturbation": case["perturbation"], "min_pixel": case["min_pixel"], "max_pixel": 1}
    extra["failure"] = case["failure"]
    large = {"robust_accuracy": case["large"]}
    extras = [
        (Unit("attack", "m", "pgd", "{}", 0.01, None, "", (), "bf16"), extra),
        (Unit("attack", "m", LARGE_EPS_METHOD, "{}", 0.5, None, "", (), "bf16"), large),
    ]
    return rows, extras


@pytest.mark.parametrize("name", SANITY_CHECKS.names())
@pytest.mark.parametrize("case, value", [(HEALTHY, 1.0), (BROKEN, 0.0)])
def test_every_registered_check_gives_its_named_row(name, case, value):
    evidence = gather(CTX, *_run(case))
    (row,) = SANITY_CHECKS.get(name)(evidence, KEY)
    assert row.metric is Metric.sanity(name) and row.method == "sanity" and row.value == value
    assert (row.model, row.m_grad, row.precision) == KEY and json.loads(row.params)["detail"]


def test_sanity_rows_run_the_checks_in_registration_order():
    rows = [r for r in sanity_rows(CTX, *_run(HEALTHY)) if r.precision == "bf16"]
    assert [r.metric for r in rows] == [Metric.sanity(name) for name in SANITY_CHECKS.names()]


def test_a_second_check_of_the_same_name_is_refused():
    name = SANITY_CHECKS.names()[0]
    with pytest.raises(ValueError, match=name):
        sanity_check(name)(SANITY_CHECKS.get(name))
