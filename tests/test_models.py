"""Elliptical attention against its definition, a naive re-implementation, and timm's DeiT."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from reference import naive_forward

import ellrobust
from ellrobust.core.precision import precision_scope
from ellrobust.models import MODELS, elliptical_metric, load_model
from ellrobust.models import vit as vit_module


def _twin(name: str, **kw) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A baseline and an elliptical model with identical weights."""
    torch.manual_seed(0)
    base = load_model(name, **kw)
    ell = load_model(f"{name}-elliptical", **kw)
    ell.load_state_dict(base.state_dict())
    return base, ell


@torch.no_grad()
def test_elliptical_matches_naive_formula(images, norm_branch):
    _, ell = _twin("deit-nano")
    assert ell.cfg.elliptical_layers == (1, 2)
    torch.testing.assert_close(ell(images), naive_forward(ell, images), atol=1e-5, rtol=1e-4)


@pytest.fixture(params=[False, True], ids=["abs-sum", "vector-norm"])
def norm_branch(request, monkeypatch):
    """Run a test through both ways of summing |v − v_prev| (abs + sum on CPUs, one vector_norm on CUDA)."""
    monkeypatch.setattr(vit_module, "_norm_fuses_abs", lambda device: request.param)
    return request.param


def _sharpened_twin(**kw) -> tuple[torch.nn.Module, torch.nn.Module]:
    """deit-nano twins with 10× qkv (and head) weights: peaked attention, so that ``m`` visibly matters.

    At the random initialisation attention is nearly uniform and the elliptical model differs from
    the baseline by less than bfloat16's rounding, so no bf16 test could tell a wrong ``m``.
    """
    base, ell = _twin("deit-nano", **kw)
    with torch.no_grad():
        for model in (base, ell):
            for blk in model.blocks:
                blk.attn.qkv.weight.mul_(10)
            model.head.weight.mul_(10)
    return base, ell


def _input_grad(forward, images: torch.Tensor) -> torch.Tensor:
    """The gradient of a cross-entropy loss with respect to the images: what an attack step computes."""
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(forward(x).float(), torch.arange(len(x)) % 10)
    return torch.autograd.grad(loss, x)[0]


@torch.no_grad()
def test_elliptical_matches_naive_formula_under_bf16_autocast(images, norm_branch):
    base, ell = _sharpened_twin()
    ref, ref_base = naive_forward(ell, images), naive_forward(base, images)
    with precision_scope("bf16", "cpu"):
        out = ell(images)
        _, blocks = ell.forward_blocks(images)
    tol = {"atol": 5e-2, "rtol": 2e-2}
    assert (ref - ref_base).abs().max() > 10 * tol["atol"]  # a wrong m would show
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, **tol)
    for blk in blocks[1:]:  # no dtype round trip: queries and m stay in the autocast dtype
        assert blk.q.dtype == blk.v.dtype == blk.m.dtype == torch.bfloat16


@pytest.mark.parametrize("m_grad", ["detach", "full"])
def test_input_gradients_match_naive_formula(images, m_grad, norm_branch):
    _, ell = _sharpened_twin(m_grad=m_grad)
    got, ref = _input_grad(ell, images), _input_grad(lambda x: naive_forward(ell, x), images)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-4)
    with precision_scope("bf16", "cpu"):
        low = _input_grad(ell, images)
    assert F.cosine_similarity(low.flatten(), ref.flatten(), dim=0) > 0.99


def test_naive_input_gradients_differ_between_m_grad_modes(images):
    _, detached = _sharpened_twin()
    _, full = _sharpened_twin(m_grad="full")
    a, b = (_input_grad(lambda x, m=m: naive_forward(m, x), images) for m in (detached, full))
    assert (a - b).norm() > 0.05 * a.norm()  # so that the comparison above tells the modes apart


def test_metric_accumulates_in_float32_for_bf16_values(norm_branch):
    """4096 tokens whose differences are 1 and 3 (exact in bf16): a bf16 running sum would stall at 256."""
    v_prev = torch.zeros(1, 1, 4096, 2, dtype=torch.bfloat16)
    v = torch.tensor([1.0, 3.0], dtype=torch.bfloat16).expand(1, 1, 4096, 2)
    for detach in (True, False):
        m = elliptical_metric(v, v_prev, detach=detach)
        assert m.dtype == torch.bfloat16
        assert m.flatten().tolist() == [torch.tensor(1 / 3, dtype=torch.bfloat16).item(), 1.0]


def test_metric_detach_and_full_agree_and_only_full_has_gradient(norm_branch):
    v = torch.randn(2, 3, 7, 5, requires_grad=True)
    v_prev = torch.randn(2, 3, 7, 5, requires_grad=True)
    detached, full = elliptical_metric(v, v_prev, detach=True), elliptical_metric(v, v_prev, detach=False)
    assert not detached.requires_grad and full.requires_grad
    torch.testing.assert_close(detached, full)
    same = elliptical_metric(v, v.detach().clone(), detach=True)
    assert torch.equal(same, torch.ones_like(same))


@torch.no_grad()
def test_baseline_matches_naive_formula(images):
    base, _ = _twin("deit-nano")
    torch.testing.assert_close(base(images), naive_forward(base, images), atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_m_equal_one_gives_baseline_and_general_m_differs(images, monkeypatch):
    base, ell = _twin("deit-nano")
    assert not torch.allclose(base(images), ell(images), atol=1e-6)
    monkeypatch.setattr(vit_module, "elliptical_metric", lambda v, v_prev, detach=True: torch.ones_like(v[..., :1, :]))
    torch.testing.assert_close(base(images), ell(images))


def test_metric_is_max_scaled_per_sample_and_head():
    v, v_prev = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    m = elliptical_metric(v, v_prev)
    assert m.shape == (2, 3, 1, 4)
    assert torch.all(m > 0) and torch.all(m <= 1)
    torch.testing.assert_close(m.amax(-1), torch.ones(2, 3, 1))
    expected = (v - v_prev).abs().mean(2)
    torch.testing.assert_close(m[:, :, 0], expected / expected.amax(-1, keepdim=True))


def test_metric_guards_zero_over_zero(norm_branch):
    v = torch.randn(1, 2, 4, 3, requires_grad=True)
    m = elliptical_metric(v, v.detach().clone(), detach=False)
    assert torch.equal(m, torch.ones_like(m))
    m.sum().backward()
    assert torch.isfinite(v.grad).all()


def test_m_grad_full_same_logits_different_input_gradients(images):
    _, ell = _twin("deit-nano")
    full = load_model("deit-nano-elliptical", m_grad="full")
    full.load_state_dict(ell.state_dict())
    grads, logits = [], []
    for model in (ell, full):
        x = images.clone().requires_grad_(True)
        out = model(x)
        out[:, 0].sum().backward()
        grads.append(x.grad)
        logits.append(out.detach())
    torch.testing.assert_close(logits[0], logits[1])
    assert not torch.allclose(grads[0], grads[1])


def test_set_m_grad_switches_modes(images):
    _, ell = _twin("deit-nano")
    ell.set_m_grad("full")
    assert all(b.attn.m_grad.value == "full" for b in ell.blocks)
    with pytest.raises(ValueError):
        ell.set_m_grad("sometimes")


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_shares_the_timm_layout(name):
    spec = MODELS.get(name)
    base_name = name.removesuffix("-elliptical")
    assert MODELS.get(base_name).config.elliptical_layers == ()
    if spec.config.img_size > 32:
        pytest.skip("224 px members are covered by the timm comparison below")
    model = load_model(name)
    twin = load_model(base_name)
    assert list(model.state_dict()) == list(twin.state_dict())
    assert sum(p.numel() for p in model.parameters()) == spec.num_params()
    out = model(torch.rand(2, 3, spec.config.img_size, spec.config.img_size))
    assert out.shape == (2, spec.config.num_classes)


@torch.no_grad()
def test_equals_timm_deit_tiny_on_its_own_weights():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    for name in ("deit-tiny", "deit-tiny-elliptical"):
        ours = load_model(name)
        ours.load_state_dict(ref.state_dict(), strict=True)
        assert sum(p.numel() for p in ours.parameters()) == MODELS.get(name).num_params()
    base = load_model("deit-tiny")
    base.load_state_dict(ref.state_dict())
    x = torch.rand(2, 3, 224, 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(base(x), ref((x - mean) / std), atol=1e-4, rtol=1e-4)


def test_model_takes_unit_range_images_and_returns_eval_mode():
    model = ellrobust.load_model("deit-nano")
    assert not model.training
    assert model.cfg.mean == (0.485, 0.456, 0.406)
    assert "normalize.mean" not in model.state_dict()


def test_configurable_elliptical_layers():
    model = load_model("deit-micro-elliptical", elliptical_layers=(2, 4))
    assert [b.attn.elliptical for b in model.blocks] == [False, False, True, False, True, False]
    with pytest.raises(ellrobust.core.errors.UsageError, match="out of range"):
        load_model("deit-micro-elliptical", elliptical_layers=(0,))
    with pytest.raises(ellrobust.core.errors.UsageError, match="not elliptical"):
        load_model("deit-micro", elliptical_layers=(1,))


def test_unknown_model_suggests_close_names():
    with pytest.raises(ellrobust.core.errors.UsageError, match="Did you mean 'deit-tiny'"):
        load_model("deit-tiyn")


def test_short_names_give_the_shipped_trained_models():
    from ellrobust.models.zoo import shipped_checkpoint

    for short, arch in (("deit", "deit-micro"), ("deit-elliptical", "deit-micro-elliptical")):
        ck = shipped_checkpoint("digits", arch)
        assert ck is not None, f"shipped checkpoint for {arch} is missing"
        meta = ck.metadata()
        assert meta["test_accuracy"] >= 0.95
        model = load_model(short)
        assert model.cfg.elliptical_layers == load_model(arch).cfg.elliptical_layers


@pytest.mark.slow
@pytest.mark.parametrize("m_grad", ["detach", "full"])
def test_compiled_path_matches_eager(monkeypatch, images, m_grad, norm_branch):
    """The function CUDA compiles, compiled here for the CPU by inductor: the same logits and input gradients.

    Slow (tens of seconds of compilation on a cold cache). A compilation failure would fall back to
    eager and make the comparison empty, hence warnings are errors and the fallback is checked.
    """
    from ellrobust.models import compiled

    _, ell = _sharpened_twin(m_grad=m_grad)
    with torch.no_grad():
        logits = ell(images)
    grad = _input_grad(ell, images)
    with precision_scope("bf16", "cpu"):
        grad_bf16 = _input_grad(ell, images)
    monkeypatch.setattr(compiled, "STATS", compiled.CompileStats())
    monkeypatch.setenv(compiled.COMPILE_ENV, "force")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with torch.no_grad():
            compiled_logits = ell(images)
        compiled_grad = _input_grad(ell, images)
        with precision_scope("bf16", "cpu"):
            compiled_grad_bf16 = _input_grad(ell, images)
    assert compiled.STATS.fallback is None and compiled.STATS.graphs == 3 and compiled.STATS.eager_calls == 0
    torch.testing.assert_close(compiled_logits, logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(compiled_grad, grad, atol=1e-6, rtol=1e-4)
    assert F.cosine_similarity(compiled_grad_bf16.flatten(), grad_bf16.flatten(), dim=0) > 0.99
