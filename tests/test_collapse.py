"""Representation collapse: the metric identities, the feature API's hygiene, the CLI end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from ellrobust.cli import app
from ellrobust.core.errors import UsageError
from ellrobust.measures.collapse_probe import (
    CollapseAccumulator,
    CollapseConfig,
    Feature,
    MetricKey,
    collapse_metrics,
    value_key,
)
from ellrobust.models import load_model
from ellrobust.models.checkpoint import save_safetensors
from ellrobust.results import Metric
from ellrobust.stats import collapse_metrics as collapse_fns
from ellrobust.stats.collapse_metrics import (
    attention_entropy,
    attention_entropy_qk,
    effective_rank,
    token_cosine,
    token_cosine_naive,
)

NANO_DEPTH = 3
TINY = ["--data", "synthetic", "-m", "deit-nano-elliptical", "-m", "deit-nano", "--n", "32", "--batch-size", "16"]


# --- pure metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 2, 5), (4, 17, 8), (2, 65, 96)])
def test_token_cosine_identity_equals_the_direct_average(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) + 0.5  # a shared offset: cosines ≠ 0
    torch.testing.assert_close(token_cosine(x), token_cosine_naive(x), atol=1e-5, rtol=1e-5)


def test_token_cosine_of_identical_and_orthonormal_tokens():
    same = torch.randn(1, 1, 16).expand(2, 10, 16) * torch.rand(2, 10, 1).add(0.1)  # positive multiples of one vector
    torch.testing.assert_close(token_cosine(same), torch.ones(2))
    orthonormal = torch.linalg.qr(torch.randn(2, 16, 16)).Q[:, :, :10].transpose(1, 2)  # (2, 10, 16), orthonormal rows
    torch.testing.assert_close(token_cosine(orthonormal), torch.zeros(2), atol=1e-6, rtol=0)


def test_attention_entropy_uniform_is_log_n_and_one_hot_is_zero():
    n = 13
    uniform = torch.full((2, 3, n, n), 1 / n)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((2, 3), math.log(n)))
    one_hot = torch.eye(n).expand(2, 3, n, n)
    torch.testing.assert_close(attention_entropy(one_hot), torch.zeros(2, 3))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_entropy_from_queries_and_keys_equals_the_probabilities_form(monkeypatch, fused, dtype):
    if not fused:
        monkeypatch.setattr(collapse_fns, "_FLASH_CPU", None)  # the explicit-scores path (GPU, old torch)
    gen = torch.Generator().manual_seed(0)
    for spread in (0.3, 1.0, 6.0):  # near-uniform to near-one-hot rows
        q = (torch.randn(3, 2, 17, 8, generator=gen) * spread).to(dtype)
        k = (torch.randn(3, 2, 17, 8, generator=gen) * spread).to(dtype)
        p = (q.double() @ k.double().transpose(-2, -1) / math.sqrt(8)).softmax(dim=-1)
        want = attention_entropy(p)
        torch.testing.assert_close(attention_entropy_qk(q, k), want, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(
            attention_entropy_qk(q[:, :, 1:], k), attention_entropy(p[:, :, 1:]), atol=2e-5, rtol=1e-5
        )
    n = 13
    torch.testing.assert_close(
        attention_entropy_qk(torch.zeros(2, 3, n, 4), torch.randn(2, 3, n, 4)), torch.full((2, 3), math.log(n))
    )


def test_effective_rank_bounds_and_reference():
    rank_one = torch.randn(2, 9, 1) * torch.randn(2, 1, 6)
    torch.testing.assert_close(effective_rank(rank_one), torch.ones(2), atol=1e-4, rtol=0)
    orthonormal = torch.linalg.qr(torch.randn(1, 12, 12)).Q[:, :5]  # (1, 5, 12): 5 equal singular values
    torch.testing.assert_close(effective_rank(orthonormal), torch.tensor([5.0]), atol=1e-4, rtol=0)
    x = torch.randn(3, 20, 7, dtype=torch.float64)
    s = torch.linalg.svdvals(x)
    p = s / s.sum(-1, keepdim=True)
    torch.testing.assert_close(effective_rank(x), torch.exp(-(p * p.log()).sum(-1)).float())
    wide = torch.randn(2, 5, 9, 12)  # leading dims batch (layers stacked), both Gram orientations
    tall = torch.randn(2, 5, 12, 9)
    for t in (wide, tall):
        s = torch.linalg.svdvals(t.double())
        p = s / s.sum(-1, keepdim=True)
        torch.testing.assert_close(effective_rank(t), torch.exp(-(p * p.log()).sum(-1)).float())


# --- the feature API --------------------------------------------------------------------------------


def _hooks(model: torch.nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks")
    return sum(len(getattr(mod, name, {})) for mod in model.modules() for name in names)


@pytest.mark.parametrize("name", ["deit-nano", "deit-nano-elliptical"])
def test_collapse_metrics_leave_the_model_unchanged(name, images):
    torch.manual_seed(0)
    model = load_model(name)
    before = model(images)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = CollapseConfig(feature=Feature.ATTENTION, per_head=True)
    out = collapse_metrics(model, images.requires_grad_(), config, config.resolve_layers(NANO_DEPTH))
    assert all(not v.requires_grad and v.shape == (4,) for v in out.values())
    assert {k.layer for k in out} == {0, 1, 2} and {k.head for k in out} == {None, 0, 1}
    torch.testing.assert_close(model(images), before, rtol=0, atol=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert _hooks(model) == 0


@pytest.mark.parametrize("name", ["deit-nano", "deit-nano-elliptical"])
@pytest.mark.parametrize("include_cls", [True, False])
def test_collapse_metrics_match_a_recomputation_from_the_block_inputs(name, include_cls, images):
    # Entropy from the forward pass's q (⊙ m) and k equals explicit probabilities recomputed from the
    # attention's own input and weights; per-head outputs equal p @ v; all layers' ranks equal per-layer ones.
    torch.manual_seed(0)
    model = load_model(name)
    config = CollapseConfig(feature=Feature.ATTENTION, per_head=True, include_cls=include_cls)
    out = collapse_metrics(model, images, config, config.resolve_layers(NANO_DEPTH))
    first = 0 if include_cls else 1
    with torch.no_grad():
        _, blocks = model.forward_blocks(images)
        for layer, block in enumerate(blocks):
            attn = model.blocks[layer].attn
            B, N, C = block.attn_in.shape
            qkv = attn.qkv(block.attn_in).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            if block.m is not None:
                q = q * block.m
            p = (q @ k.transpose(-2, -1) * attn.head_dim**-0.5).softmax(dim=-1)
            entropy = attention_entropy(p[:, :, first:])
            key = Metric.ATTENTION_ENTROPY
            torch.testing.assert_close(out[MetricKey(key, layer)], entropy.mean(-1), atol=1e-5, rtol=1e-5)
            for head in range(attn.num_heads):
                torch.testing.assert_close(out[MetricKey(key, layer, head)], entropy[:, head], atol=1e-5, rtol=1e-5)
            rank = effective_rank(block.attn_out[:, first:])
            torch.testing.assert_close(out[MetricKey(Metric.EFFECTIVE_RANK, layer)], rank)
            heads = (p @ v)[:, :, first:]
            for head in range(attn.num_heads):
                want = effective_rank(heads[:, head])
                got = out[MetricKey(Metric.EFFECTIVE_RANK, layer, head)]
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_accumulator_averages_over_images_whatever_the_batches(images):
    torch.manual_seed(0)
    model = load_model("deit-nano-elliptical")
    config = CollapseConfig(metrics=("token_cosine", "effective_rank"))
    whole, split = CollapseAccumulator(model, config), CollapseAccumulator(model, config)
    whole.add(images, [0, 1, 2, 3])
    split.add(images[:1], [0])
    split.add(images[1:], [1, 2, 3])
    common = {"model": "m", "method": "collapse", "m_grad": ""}
    a, b = (pd.DataFrame([r.as_dict() for r in acc.rows(common, 4)]) for acc in (whole, split))
    means = a[a.metric.isin(["token_cosine", "effective_rank"])]
    assert set(means.metric) == {"token_cosine", "effective_rank"} and sorted(means.layer.dropna().unique()) == [
        0,
        1,
        2,
    ]
    pd.testing.assert_frame_equal(a, b, atol=1e-6, rtol=1e-6)
    assert json.loads(a.params[0]) == {"feature": "residual", "cls": True}
    assert CollapseAccumulator(model, config).rows(common, 4) == []


def test_collapse_rows_carry_intervals_over_images_and_a_later_half_summary(images):
    torch.manual_seed(0)
    model = load_model("deit-nano-elliptical")
    accumulator = CollapseAccumulator(model, CollapseConfig(metrics=("token_cosine",)))
    accumulator.add(images, [0, 2, 3, 5])  # positions 1 and 4 of a 6-image selection not measured
    values = accumulator.values(6)
    per_image = {
        layer: np.asarray(values[value_key("token_cosine", layer)], dtype=object) for layer in range(NANO_DEPTH)
    }
    assert all(per_image[layer][1] is None and per_image[layer][4] is None for layer in per_image)
    rows = {(r.metric, r.layer): r.as_dict() for r in accumulator.rows({"model": "m", "method": "collapse"}, 6)}
    for layer in range(NANO_DEPTH):
        measured = np.asarray([v for v in per_image[layer] if v is not None], dtype=float)
        mean, sd = measured.mean(), measured.std(ddof=1)
        half = stats.t.ppf(0.975, len(measured) - 1) * sd / np.sqrt(len(measured))
        assert rows[("token_cosine", layer)]["value"] == pytest.approx(mean)
        assert rows[("token_cosine_ci_low", layer)]["value"] == pytest.approx(mean - half)
        assert rows[("token_cosine_ci_high", layer)]["value"] == pytest.approx(mean + half)
    later = [layer for layer in range(NANO_DEPTH) if layer >= NANO_DEPTH // 2]
    summary = rows[("token_cosine", None)]
    assert json.loads(summary["params"])["layers"] == later
    assert summary["value"] == pytest.approx(np.mean([rows[("token_cosine", layer)]["value"] for layer in later]))


def test_config_validation():
    with pytest.raises(UsageError, match="--feature must be one of residual, attention"):
        CollapseConfig(feature="tokens")
    with pytest.raises(UsageError, match="--per-head needs --feature attention"):
        CollapseConfig(per_head=True)
    with pytest.raises(UsageError, match="valid layers are 0–2"):
        CollapseConfig(layers=(1, 3)).resolve_layers(NANO_DEPTH)
    with pytest.raises(UsageError, match="--metrics must be among"):
        CollapseConfig(metrics=("cosine",))
    assert CollapseConfig(layers=(2, 0, 2)).layers == (0, 2)
    assert CollapseConfig(metrics=("token_cosine",)).metrics == (Metric.TOKEN_COSINE,)


# --- the CLI ----------------------------------------------------------------------------------------


def test_collapse_cli_table_and_json(runner, tmp_path):
    out = tmp_path / "run"
    table = runner.invoke(app, ["collapse", *TINY, "--out", str(out)])
    assert table.exit_code == 0, table.output
    for title in ("Token cosine similarity", "Attention entropy", "Effective rank"):  # one table per metric
        assert f"{title} per layer on the clean images" in table.stdout
    as_json = runner.invoke(app, ["collapse", *TINY, "--out", str(out), "--json"])  # resumes the same run
    assert as_json.exit_code == 0, as_json.output
    df = pd.DataFrame(json.loads(as_json.stdout))
    cos = df[df.metric == "token_cosine"]
    assert set(cos.method) == {"collapse"} and set(cos.m_grad) == {""}
    for model in ("deit-nano", "deit-nano-elliptical"):
        assert sorted(cos[cos.model == model].layer.dropna()) == list(range(NANO_DEPTH))
    assert cos.value.between(-1, 1).all()
    diff = df[(df.metric == "token_cosine_difference") & df.layer.notna()]
    assert (
        len(diff) == NANO_DEPTH and set(diff.model) == {"deit-nano-elliptical"} and set(diff.baseline) == {"deit-nano"}
    )
    names = ("token_cosine", "attention_entropy", "effective_rank")
    suffixes = ("", "_ci_low", "_ci_high", "_difference", "_difference_ci_low", "_difference_ci_high")
    assert set(df[df.layer.notna()].metric) == {m + s for m in names for s in suffixes}


@pytest.mark.parametrize(
    "args",
    [["--layers", "0,7"], ["--feature", "tokens"], ["--per-head"], ["--metrics", "nope"], ["--layers", "x"]],
)
def test_collapse_cli_bad_options_exit_2_with_one_line(runner, tmp_path, args):
    result = runner.invoke(app, ["collapse", *TINY, "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output


def test_eval_collapse_measures_adversarial_images(runner, tmp_path):
    # A model that always answers class 0 is right on the class-0 images, so the attack has images to attack.
    torch.manual_seed(0)
    model = load_model("deit-nano")
    with torch.no_grad():
        model.head.bias[0] = 10.0
    ckpt = save_safetensors(model.state_dict(), tmp_path / "class0.safetensors")
    args = [*TINY, "-c", str(ckpt), "-c", str(ckpt), "--attack", "fgsm", "--eps", "8/255", "--collapse", "--no-sanity"]
    result = runner.invoke(app, ["eval", *args, "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    df = pd.DataFrame(json.loads(result.stdout))
    adv = df[(df.metric == "token_cosine") & (df.method == "fgsm")]
    assert set(adv.model) == {"deit-nano", "deit-nano-elliptical"}
    assert sorted(adv[adv.model == "deit-nano"].layer.dropna()) == list(range(NANO_DEPTH))
    assert set(adv.eps) == {8 / 255}
    assert set(adv[adv.model == "deit-nano-elliptical"].m_grad) == {"detach"}
    assert set(adv[adv.model == "deit-nano"].m_grad) == {""}
    assert json.loads(adv.params.iloc[0])["feature"] == "residual"
    clean = df[(df.metric == "token_cosine") & (df.method == "collapse")]
    assert len(clean) == 2 * (NANO_DEPTH + 1)  # every layer and the later-half summary
