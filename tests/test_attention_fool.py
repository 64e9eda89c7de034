"""Attention-Fool: its loss against the paper's formula, its ascent, and its gradient through the elliptical metric."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ellrobust.attacks import ATTACKS, make_request, perturb
from ellrobust.attacks.attention_fool import cosine_step, kq_loss
from ellrobust.core.errors import UsageError
from ellrobust.data import load_dataset
from ellrobust.models import load_model
from ellrobust.models.vit import BlockOutput


def _block(q: torch.Tensor, k: torch.Tensor) -> BlockOutput:
    tokens = torch.zeros(q.shape[0], q.shape[2], q.shape[1] * q.shape[3])
    return BlockOutput(x=tokens, attn_out=tokens, attn_in=tokens, q=q, k=k, v=k, m=None)


def _by_hand(blocks: list[BlockOutput], keys: list[list[int]], query: int | None) -> list[float]:
    """``L_kq`` written out with loops: normalise Q and K per head, mean logit to the patch, log-sum-exp twice."""
    out = []
    for b, patch in enumerate(keys):
        layers = []
        for block in blocks:
            heads = []
            for h in range(block.q.shape[1]):
                q, k = block.q[b, h].double(), block.k[b, h].double()
                q = q / (sum(q[i].norm() for i in range(len(q))) / len(q))
                k = k / (sum(k[i].norm() for i in range(len(k))) / len(k))
                rows = range(len(q)) if query is None else [query]
                logits = [q[i] @ k[j] / math.sqrt(q.shape[-1]) for i in rows for j in patch]
                heads.append(sum(logits) / len(logits))
            layers.append(math.log(sum(math.exp(v) for v in heads)))
        out.append(math.log(sum(math.exp(v) for v in layers)))
    return out


@pytest.mark.parametrize("query", [None, 0])
def test_kq_loss_is_the_papers_formula(query):
    g = torch.Generator().manual_seed(0)
    blocks = [_block(torch.randn(2, 3, 6, 4, generator=g), torch.randn(2, 3, 6, 4, generator=g)) for _ in range(2)]
    keys = [[2, 3], [4, 5]]  # two patches per image: the logit is averaged over their key tokens
    got = kq_loss(blocks, torch.tensor(keys), query)
    assert got.tolist() == pytest.approx(_by_hand(blocks, keys, query), rel=1e-5)


def test_kq_loss_does_not_depend_on_a_heads_scale():
    """The ‖·‖₁,₂ normalisation: scaling one head's queries or keys leaves its logits, and the loss, as they were."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 2, 5, 4, generator=g), torch.randn(1, 2, 5, 4, generator=g)
    keys = torch.tensor([[3]])
    scaled_q, scaled_k = q.clone(), k.clone()
    scaled_q[:, 0] *= 50
    scaled_k[:, 1] *= 0.01
    assert kq_loss([_block(scaled_q, scaled_k)], keys).item() == pytest.approx(kq_loss([_block(q, k)], keys).item())


def test_the_step_size_decays_on_a_cosine_from_the_given_size():
    sizes = [cosine_step(0.1, t, 10) for t in range(10)]
    assert sizes[0] == pytest.approx(0.1) and sizes[5] == pytest.approx(0.05)
    assert all(a > b > 0 for a, b in zip(sizes, sizes[1:], strict=False))


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(4)])
    return x, torch.tensor([int(data.dataset[i][1]) for i in range(4)])


def test_the_objective_rises_during_the_attack(digits):
    x, y = digits
    model = load_model("deit")
    info: dict = {}
    torch.manual_seed(0)
    perturb(model, make_request("attention-fool", {"steps": 10}), x, y, eps=1.0, num_classes=10, seed=0, info=info)
    rise = info["objective_last"] - info["objective_first"]
    assert bool((rise > 0).all())  # every image ends its steps above where it started


def _input_gradient(model, x: torch.Tensor, mode: str) -> tuple[torch.Tensor, list[bool]]:
    """The pixels' gradient of ``L_kq`` (patch at token 5), and whether each layer's ``m`` carries gradient."""
    model.set_m_grad(mode)
    image = x.clone().requires_grad_(True)
    _, blocks = model.forward_blocks(image)
    (grad,) = torch.autograd.grad(kq_loss(blocks, torch.full((len(x), 1), 5)).sum(), image)
    return grad, [block.m.requires_grad for block in blocks if block.m is not None]


def test_m_grad_full_differentiates_through_the_metric_and_detach_does_not(digits):
    x, _ = digits
    model = load_model("deit-elliptical")
    try:
        detached, detached_m = _input_gradient(model, x[:2], "detach")
        full, full_m = _input_gradient(model, x[:2], "full")
    finally:
        model.set_m_grad("detach")
    assert detached_m and not any(detached_m) and all(full_m)
    assert not torch.allclose(detached, full, rtol=1e-3, atol=1e-8)


def test_m_grad_changes_nothing_on_the_standard_model(digits):
    x, _ = digits
    model = load_model("deit")
    detached, _ = _input_gradient(model, x[:2], "detach")
    full, _ = _input_gradient(model, x[:2], "full")
    assert torch.equal(detached, full)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"momentum": 1.0}, "momentum must be in"),
        ({"kq_queries": "cls"}, "kq_queries must be one of"),
        ({"step_size": 0.0}, "step_size must be a positive"),
        ({"kq_weight": -1.0}, "kq_weight must be a number"),
    ],
)
def test_a_parameter_no_attack_could_use_is_refused_in_one_line(params, message):
    request = make_request("attention-fool", params)
    with pytest.raises(UsageError, match=message) as caught:
        ATTACKS.get("attention-fool").factory(load_model("deit"), 1.0, dict(request.params), 10, 0)
    assert "\n" not in str(caught.value)


class NoClassToken(nn.Module):
    """Tokens without a class token (a pooled ViT): ``L_kq*`` has no query to read."""

    depth, num_prefix_tokens = 1, 0

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.patch_size = (4, 4)

    def iter_blocks(self, x: torch.Tensor):
        yield from ()


def test_the_class_query_loss_is_refused_without_a_class_token():
    request = make_request("attention-fool", {"kq_queries": "class"})
    with pytest.raises(UsageError, match="needs a class token"):
        ATTACKS.get("attention-fool").factory(NoClassToken(), 1.0, dict(request.params), 10, 0)
