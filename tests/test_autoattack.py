"""AutoAttack as a cascade, FAB-T computed for its verdict, SPSA in memory-sized passes, precision."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from ellrobust.attacks import ATTACKS, make_request, perturb, perturbation_norm, validate_request
from ellrobust.attacks.cascade import Cascade, Torchattack
from ellrobust.attacks.fab import FabTargeted
from ellrobust.attacks.memory import PassSize, images_per_pass
from ellrobust.attacks.spsa import SPSA
from ellrobust.core.errors import UsageError
from ellrobust.core.precision import Precision
from ellrobust.data import load_dataset
from ellrobust.models import load_model

CHEAP = {"steps": 3, "queries": 20}


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return load_model("deit-nano-elliptical")


@pytest.fixture(scope="module")
def points(nano):
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, nano(x).argmax(1)  # every point classified correctly


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(8)])
    y = torch.stack([torch.as_tensor(data.dataset[i][1]) for i in range(8)])
    return x, y


class WrittenClass(nn.Module):
    """Predicts the class written into the first pixel (class c at c / 10) and notes every call's autocast state."""

    def __init__(self):
        super().__init__()
        self.autocast: list[bool] = []

    def forward(self, x):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return -((torch.arange(10.0) - x[:, 0, 0, 0:1] * 10) ** 2)


class Relabel:
    """A stand-in torchattacks attack: rewrites the class of the images marked in pixel (0, 0, 1)."""

    def __init__(self, marked: float):
        self.marked, self.seen, self.autocast = marked, [], []

    def set_model_training_mode(self, model_training=False):
        pass

    def __call__(self, images, labels):
        self.seen.append(images.clone())
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        out = images.clone()
        hit = images[:, 0, 0, 1] == self.marked
        out[hit, 0, 0, 0] = (images[hit, 0, 0, 0] + 0.1) % 1.0
        return out


def _written(classes: list[int], marks: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(len(classes), 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(classes, dtype=torch.float) / 10
    x[:, 0, 0, 1] = torch.tensor(marks)
    return x, torch.tensor(classes)


def test_cascade_passes_on_only_robust_images_and_decides_in_fp32():
    model = WrittenClass()
    first, second = Relabel(marked=0.5), Relabel(marked=0.25)
    x, y = _written([1, 2, 3, 4, 5, 6], [0.5, 0.0, 0.5, 0.25, 0.0, 0.25])
    y[5] = 0  # misclassified clean: never attacked
    info: dict = {}
    cascade = Cascade(model, (("first", Torchattack(first)), ("second", Torchattack(second))))
    adv = cascade.run(x, y, precision=Precision.BF16, info=info)
    assert len(first.seen[0]) == 5
    assert torch.equal(second.seen[0], x[[1, 3, 4]])  # what "first" left robust, nothing else
    assert info["components"]["first"] | {"seconds": 0} == {"seconds": 0, "attacked": 5, "broken": 2}
    assert info["components"]["second"] | {"seconds": 0} == {"seconds": 0, "attacked": 3, "broken": 1}
    assert all(s["seconds"] >= 0 for s in info["components"].values())
    assert list(info["components"]) == ["first", "second"]
    assert (model(adv).argmax(1) != y).tolist() == [True, False, True, True, False, True]
    assert first.autocast == second.autocast == [True]  # the components iterate in bf16 ...
    assert not any(model.autocast)  # ... every decision of the cascade is an fp32 forward


def test_cascade_lists_every_component_even_when_nothing_is_left():
    model = WrittenClass()
    x, y = _written([1, 2], [0.5, 0.5])
    info: dict = {}
    Cascade(model, (("first", Torchattack(Relabel(0.5))), ("second", Torchattack(Relabel(0.5))))).run(x, y, info=info)
    assert info["components"]["second"]["attacked"] == 0 and info["components"]["second"]["broken"] == 0


@pytest.mark.parametrize(
    "name, components", [("autoattack", ["apgd-ce", "apgd-t", "fab-t", "square"]), ("apgd", ["apgd-ce", "apgd-t"])]
)
def test_component_timings_are_recorded(nano, points, name, components):
    x, y = points
    info: dict = {}
    adv = perturb(nano, make_request(name, CHEAP), x, y, eps=4 / 255, num_classes=10, seed=0, info=info)
    stats = info["components"]
    assert list(stats) == components
    assert stats[components[0]]["attacked"] == len(x)
    for before, after in zip(components, components[1:], strict=False):
        assert stats[after]["attacked"] == stats[before]["attacked"] - stats[before]["broken"]
    assert all(isinstance(s["seconds"], float) and s["seconds"] >= 0 for s in stats.values())
    with torch.no_grad():
        robust = int((nano(adv).argmax(1) == y).sum())
    assert robust == stats[components[-1]]["attacked"] - stats[components[-1]]["broken"]


def test_apgd_is_registered_as_apgd_ce_plus_apgd_t_not_autoattack(nano):
    defn = ATTACKS.get("apgd")
    assert defn.label == "APGD-CE + APGD-T"
    assert "APGD-CE + APGD-T" in defn.description and "autoattack" not in (defn.label + defn.description).lower()
    attack = defn.factory(nano, 2 / 255, dict(make_request("apgd").params), 10, 0)
    assert [name for name, _ in attack.components] == ["apgd-ce", "apgd-t"]
    assert [a.attack.steps for _, a in attack.components] == [100, 100]
    assert attack.components[1][1].attack.n_target_classes == 9
    assert ATTACKS.get("autoattack").label == "AutoAttack"


def test_fast_fab_t_gives_torchattacks_verdicts(digits):
    model = load_model("deit")
    x, y = digits
    eps, steps = 3 / 255, 8
    ours = FabTargeted(model, eps=eps, steps=steps, target_classes=9).run(x, y)
    reference = torchattacks.FAB(model, eps=eps, steps=steps, multi_targeted=True, n_classes=10)
    reference.n_target_classes = 9
    reference.set_model_training_mode(model_training=False)
    theirs = reference(x, y)

    def broken(adv):
        with torch.no_grad():
            return ((model(adv).argmax(1) != y) & (perturbation_norm(adv, x, "Linf") <= eps)).tolist()

    assert broken(ours) == broken(theirs)
    assert 0 < sum(broken(ours)) < len(x)  # the comparison says something


class OutOfMemoryAbove(nn.Module):
    """Raises CUDA's out-of-memory error for any pass of more than ``limit`` images."""

    def __init__(self, inner: nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"fake: {len(x)} images")
        self.sizes.append(len(x))
        return self.inner(x)


def test_fab_t_halves_its_passes_on_out_of_memory_and_gets_the_same_result(digits):
    model = load_model("deit")
    x, y = digits
    whole = FabTargeted(model, eps=3 / 255, steps=4, target_classes=3).run(x, y)
    limited = OutOfMemoryAbove(model, limit=5)  # a CPU pass holds one pair per image: 8, then 4
    assert torch.allclose(FabTargeted(limited, eps=3 / 255, steps=4, target_classes=3).run(x, y), whole, atol=1e-6)
    assert max(limited.sizes) <= 5 and 4 in limited.sizes


def _spsa(model, **kw):
    return SPSA(
        model,
        **(
            {"eps": 8 / 255, "delta": 0.01, "lr": 0.01, "steps": 3, "samples": 16, "max_batch_size": 16, "seed": 5} | kw
        ),
    )


def test_spsa_matches_torchattacks_and_does_not_depend_on_the_pass_size(nano, points, monkeypatch):
    x, y = points
    torch.manual_seed(5)  # torchattacks draws its directions from the global generator
    reference = torchattacks.SPSA(nano, eps=8 / 255, delta=0.01, lr=0.01, nb_iter=3, nb_sample=16, max_batch_size=16)(
        x, y
    )
    info: dict = {}
    whole = _spsa(nano).run(x, y, info=info)
    assert info["spsa_images_per_forward"] == 2 * 16 * len(x)  # all directions of an iteration in one pass
    assert torch.allclose(whole, reference, atol=1e-6)
    monkeypatch.setattr("ellrobust.attacks.spsa.images_per_pass", lambda *a, upper, **k: 7)
    info = {}
    small = _spsa(nano).run(x, y, info=info)
    assert info["spsa_images_per_forward"] == 6  # pairs of x ± δv
    assert torch.allclose(small, whole, atol=1e-6)


def test_spsa_halves_its_passes_on_out_of_memory(nano, points):
    x, y = points
    model = OutOfMemoryAbove(nano, limit=20)
    info: dict = {}
    adv = _spsa(model).run(x, y, info=info)
    assert max(model.sizes) <= 20 and info["spsa_images_per_forward"] <= 20
    assert torch.allclose(adv, _spsa(nano).run(x, y), atol=1e-6)


def test_pass_size_retries_smaller_and_keeps_the_smaller_size():
    calls: list[tuple[int, int]] = []

    def fn(start, stop):
        calls.append((start, stop))
        if stop - start > 3:
            raise torch.cuda.OutOfMemoryError("fake")
        return list(range(start, stop))

    size = PassSize(10)
    assert sum(size.map(fn, 9), []) == list(range(9))
    assert size.limit == 2 and calls[:3] == [(0, 9), (0, 4), (0, 2)]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        PassSize(1).map(lambda a, b: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("fake")), 1)


def test_images_per_pass_is_bounded(nano, points):
    x, _ = points
    assert 1 <= images_per_pass(nano, x, grad=True, upper=50) <= 50
    assert images_per_pass(nano, x, grad=False, extra_bytes_per_image=1 << 60, upper=50) == 1


@pytest.mark.parametrize("name", ["autoattack", "fab-t", "spsa", "apgd"])
def test_bf16_runs_and_stays_within_eps(nano, points, name):
    x, y = points
    eps = 8 / 255
    request = make_request(name, CHEAP | {"samples": 8, "max_batch_size": 8})
    adv = perturb(nano, request, x, y, eps=eps, num_classes=10, seed=0, precision=Precision.BF16)
    assert adv.dtype == x.dtype and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(perturbation_norm(adv, x, request.norm).max()) <= eps * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize(
    "name, params, classes, words",
    [
        ("autoattack", {"norm": "L1"}, 10, "--norm"),
        ("autoattack", {"target_classes": 10}, 10, "target_classes to 9 or fewer"),
        ("apgd", {}, 5, "target_classes to 4 or fewer"),
        ("fab-t", {}, 1, "at least 2 classes"),
        ("apgd-t", {"target_classes": 0}, 10, "positive integer"),
    ],
)
def test_bad_requests_are_one_line_usage_errors(name, params, classes, words):
    with pytest.raises(UsageError) as err:
        validate_request(make_request(name, params), classes)
    assert words in str(err.value) and "\n" not in str(err.value)
