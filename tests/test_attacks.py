"""Every registered attack: inside its eps ball and [0, 1]; eps parsing; the adapter's vocabulary."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ellrobust.attacks import (
    ATTACKS,
    BUDGETS,
    make_request,
    perturb,
    perturbation_norm,
    resolve_step_size,
    validate_params,
)
from ellrobust.core.errors import UsageError
from ellrobust.core.parsing import MAX_BUDGET, parse_eps_list, parse_int_range
from ellrobust.models import load_model

#: Cheap settings so that every attack runs in a second on a tiny model.
FAST = {"steps": 3, "samples": 8, "max_batch_size": 8, "queries": 30, "restarts": 2}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("deit-nano-elliptical")


#: The fixed-budget attacks (minimal-norm methods answer per image: tests/test_minimal_eval.py).
FIXED_BUDGET = [name for name in ATTACKS.names() if not ATTACKS.get(name).is_minimal]


@pytest.mark.parametrize("name", FIXED_BUDGET)
@pytest.mark.parametrize("m_grad", ["detach", "full"])
def test_attack_stays_in_eps_ball_and_unit_range(model, name, m_grad):
    defn = ATTACKS.get(name)
    eps = {"L2": 0.3, "patch": 1.0}.get(defn.norm, 8 / 255)
    model.set_m_grad(m_grad)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 32, 32, generator=g)
    y = model(x).argmax(1)  # attack points the model gets right
    request = make_request(name, FAST)
    adv = perturb(model, request, x, y, eps=eps, num_classes=10, seed=0)
    model.set_m_grad("detach")
    assert adv.shape == x.shape
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    size = perturbation_norm(adv, x, request.norm, model.cfg.patch_size)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-6
    assert float((adv - x).abs().max()) > 0 or name == "autoattack"


def test_attacks_reduce_accuracy_of_a_trained_model():
    model = load_model("deit")
    from ellrobust.data import load_dataset

    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(32)])
    y = torch.stack([data.dataset[i][1] for i in range(32)])
    clean = (model(x).argmax(1) == y).float().mean()
    adv = perturb(model, make_request("pgd", {"steps": 10}), x, y, eps=16 / 255, num_classes=10, seed=0)
    robust = (model(adv).argmax(1) == y).float().mean()
    assert robust < clean - 0.2


def test_every_parameter_is_passed_explicitly_to_spsa(model):
    request = make_request("spsa", {"samples": 4, "steps": 1})
    attack = ATTACKS.get("spsa").factory(model, 2 / 255, dict(request.params), 10, 0)
    assert attack.eps == 2 / 255  # torchattacks' code default is 0.3
    assert (attack.samples, attack.steps, attack.lr, attack.delta, attack.max_batch_size) == (4, 1, 0.01, 0.01, 64)


@pytest.mark.parametrize("key", BUDGETS)
def test_budgets_are_bounded_at_max_budget_exactly(key):
    validate_params({key: MAX_BUDGET})
    with pytest.raises(UsageError, match=f"--{key} {MAX_BUDGET + 1} is above the bound of 1,000,000"):
        validate_params({key: MAX_BUDGET + 1})


def test_step_size_absolute_or_relative():
    assert resolve_step_size("0.25*eps", 0.04) == pytest.approx(0.01)
    assert resolve_step_size("0.15eps", 0.1) == pytest.approx(0.015)
    assert resolve_step_size("2/255", 0.1) == pytest.approx(2 / 255)
    assert resolve_step_size(0.01, 0.1) == 0.01
    for bad in ("fast", "-1*eps", "0"):
        with pytest.raises(UsageError):
            resolve_step_size(bad, 0.1)


def test_unknown_attack_parameters_are_ignored_and_defaults_kept():
    request = make_request("fgsm", {"steps": 5})
    assert dict(request.params) == {}
    assert make_request("pgd", {"steps": 5}).params["step_size"] == "0.25*eps"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8/255", (8 / 255,)),
        ("1/255,2/255,4/255", (1 / 255, 2 / 255, 4 / 255)),
        ("0.03", (0.03,)),
        ("0", (0.0,)),
        ("4/255, 1/255", (1 / 255, 4 / 255)),
        ("1/255/16", (1 / 255 / 16,)),  # divisions from left to right (the bisection's default resolution)
    ],
)
def test_eps_parsing(text, expected):
    assert parse_eps_list(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", ",", "8", "-1/255", "abc", "1/0", "nan", "inf", "2/255,,x", "1e400"])
def test_eps_parsing_errors_are_one_line(text):
    with pytest.raises(UsageError) as err:
        parse_eps_list(text)
    assert "\n" not in str(err.value)


@given(st.text(max_size=40))
def test_eps_parser_fuzz_only_raises_usage_errors(text):
    try:
        values = parse_eps_list(text)
    except UsageError:
        return
    assert all(0 <= v <= 1 for v in values)


@given(st.text(max_size=20))
def test_range_parser_fuzz_only_raises_usage_errors(text):
    try:
        values = parse_int_range(text, "--severity", 1, 5)
    except UsageError:
        return
    assert values and all(1 <= v <= 5 for v in values)


def test_int_ranges():
    assert parse_int_range("1-5", "--severity", 1, 5) == (1, 2, 3, 4, 5)
    assert parse_int_range("3", "--severity", 1, 5) == (3,)
    assert parse_int_range("1,3-4", "--severity", 1, 5) == (1, 3, 4)
    for bad in ("0", "6", "1-6", "5-1", "a", ""):
        with pytest.raises(UsageError):
            parse_int_range(bad, "--severity", 1, 5)


def test_autoattack_is_configured_as_the_standard_version():
    model = load_model("deit-nano", num_classes=1000)
    request = make_request("autoattack")
    attack = ATTACKS.get("autoattack").factory(model, 4 / 255, dict(request.params), 1000, 0)
    assert [name for name, _ in attack.components] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd_ce, apgd_t, fab_t, square = (a for _, a in attack.components)
    assert [type(a.attack).__name__ for a in (apgd_ce, apgd_t, square)] == ["APGD", "APGDT", "Square"]
    assert apgd_ce.attack.steps == apgd_t.attack.steps == fab_t.steps == 100
    assert apgd_ce.attack.n_restarts == apgd_t.attack.n_restarts == square.attack.n_restarts == 1
    assert apgd_ce.attack.loss == "ce"
    assert apgd_t.attack.n_target_classes == fab_t.target_classes == 9  # torchattacks alone would use 999
    assert square.attack.n_queries == 5000 and square.attack.p_init == 0.8
    assert (
        not square.attack.rescale_schedule
    )  # the reference passes resc_schedule=False; torchattacks' default rescales
    assert all(a.attack.eps == 4 / 255 for a in (apgd_ce, apgd_t, square)) and fab_t.eps == 4 / 255
