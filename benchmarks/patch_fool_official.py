"""ellrobust's ``patch-fool`` against a transcription of the official Patch-Fool code, on the shipped digits models.

Run: ``PYTHONPATH=. python benchmarks/patch_fool_official.py [n]`` (default n = 200). On the first n digits test
images that both shipped models (``deit``, ``deit-elliptical``, m_grad detach) classify correctly, it prints:

* at one patch, per model: the success rate of the transcription and of ellrobust's ``patch-fool``, how
  often they agree (both / only official / only ellrobust / neither) and the exact McNemar p between them;
* ellrobust's ``patch-fool`` success at 1, 2 and 4 patches for both models, the exact McNemar test between
  the models at each k, and the exact sign test on each image's minimal number of patches (the smallest of
  1, 2, 4 that broke it; 5 stands for "not broken at 4").

:func:`official_patch_fool` transcribes the vanilla Patch-Fool of RICE-EIC/Patch-Fool (commit 9638ec3,
``main.py --patch_select Attn --attack_mode Attention --sparse_pixel_num 0``, every other flag at its
default): attention-based selection, cross-entropy plus the attention loss of layers ``1 .. depth // 2 − 1``,
the official PCGrad (``utils.py``), Adam with StepLR, and the last iterate. Comments name the file and
lines each part transcribes. The one adaptation is the input: the official code feeds ImageNet-normalised
tensors to a model that does not normalise, ellrobust's models take [0, 1] pixels and normalise inside. The
transcription keeps the official coordinates (``delta`` and the image live in ImageNet-normalised units,
clamped to the normalised image of [0, 1]) and hands the model ``t · std + mean``. So the learning rate is
not converted at all: Adam's step of 0.22 in those units is 0.22 · std_c = 0.050 / 0.049 / 0.050 pixels per
channel, the pixel learning rate 0.05 of ellrobust's ``patch-fool``; and the gradients PCGrad sees have the
official scale (batch mean, normalised units), which its un-normalised projection depends on. The model's
own depth, patch size and prefix tokens replace DeiT-B's 12 layers, 16-pixel patches and 197 tokens.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ellrobust.attacks import make_request, perturb
from ellrobust.attacks.patches import logits_and_blocks, patch_size, token_model
from ellrobust.data import load_dataset
from ellrobust.models import load_model
from ellrobust.stats.inference import mcnemar_exact
from ellrobust.stats.rank_tests import sign_test

MU = (0.485, 0.456, 0.406)  # utils.py:13
STD = (0.229, 0.224, 0.225)  # utils.py:14
MODELS = ("deit", "deit-elliptical")
BUDGETS = (1, 2, 4)


@dataclass(frozen=True)
class OfficialSettings:
    """The official command line's defaults (main.py:21-49) that the vanilla Patch-Fool reads."""

    batch_size: int = 64  # --batch_size: the official PCGrad's projection scales with the batch mean
    atten_select: int = 4  # --atten_select
    atten_loss_weight: float = 0.002  # --atten_loss_weight
    train_attack_iters: int = 250  # --train_attack_iters
    attack_learning_rate: float = 0.22  # --attack_learning_rate, in ImageNet-normalised units
    step_size: int = 10  # --step_size (StepLR)
    gamma: float = 0.95  # --gamma (StepLR)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.tensor(MU, device=x.device).view(3, 1, 1)  # main.py:106
    std = torch.tensor(STD, device=x.device).view(3, 1, 1)  # main.py:107
    return mu, std


def official_forward(model: nn.Module, normalised: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``out, atten = model(X)`` of the official DeiT on an ImageNet-normalised batch.

    The model takes pixels, so it gets ``X · std + mean``. ``atten`` is each block's attention
    probabilities, (B, H, N, N), as models/vision_transformer.py:94-95 computes them:
    ``softmax(q kᵀ · head_dim^-0.5)``, with the queries the block used (``⊙ m`` in an elliptical layer).
    """
    mu, std = _stats(normalised)
    logits, blocks = logits_and_blocks(token_model(model, "patch-fool"), model, normalised * std + mu)
    atten = [((b.q @ b.k.transpose(-2, -1)) * b.q.shape[-1] ** -0.5).softmax(dim=-1) for b in blocks]
    return logits.float(), atten


def official_selection(atten: list[torch.Tensor], prefix: int, count: int, atten_select: int) -> torch.Tensor:
    """(B, count) patch indices: main.py:149-156 (``--patch_select Attn``) on the clean image's attention.

    ``prefix`` is the model's number of prefix tokens (the official DeiT's ``[:, 1:]`` drops its class token).
    """
    atten_layer = atten[atten_select].mean(dim=1)  # main.py:151, heads
    atten_layer = atten_layer.mean(dim=-2)[:, prefix:]  # main.py:153, queries; prefix tokens dropped
    return atten_layer.argsort(descending=True)[:, :count]  # main.py:156


def official_mask(index: torch.Tensor, shape: torch.Size, side: int) -> torch.Tensor:
    """(B, 1, H, W) mask, 1 on the selected patches: main.py:162-175, with the model's patch side."""
    mask = torch.zeros([shape[0], 1, shape[2], shape[3]], device=index.device)  # main.py:162
    patch_num_per_line = int(shape[-1] / side)  # main.py:120
    for j in range(shape[0]):  # main.py:166-175
        for i in index[j].tolist():
            row = (i // patch_num_per_line) * side
            column = (i % patch_num_per_line) * side
            mask[j, :, row : row + side, column : column + side] = 1
    return mask


def official_attention_loss(atten_layer: torch.Tensor, target: torch.Tensor, prefix: int) -> torch.Tensor:
    """One layer's attention loss, main.py:265-270 (with 178-181): the batch and query mean of
    ``log`` of the head-averaged attention every query pays to the first selected patch.

    ``F.nll_loss(-log a, t)`` is ``mean(log a[t])``; the official target is the patch index repeated for each
    of the 197 queries, plus 1 for the class token: here repeated for the model's N queries, plus ``prefix``.
    """
    tokens = atten_layer.shape[-1]
    max_patch_index_matrix = target.repeat(tokens, 1).permute(1, 0).flatten().long()  # main.py:178-181
    atten_map = atten_layer.mean(dim=1)  # main.py:266
    atten_map = atten_map.view(-1, atten_map.size(-1))  # main.py:267
    atten_map = -torch.log(atten_map)  # main.py:268
    return F.nll_loss(atten_map, max_patch_index_matrix + prefix)  # main.py:270


def official_pcgrad(atten_grad: torch.Tensor, ce_grad: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """utils.py:133-141 as written: where the cosine is negative, subtract ``(a·g / ‖g‖) g``.

    Dividing by ‖g‖ instead of ‖g‖² makes it a projection only when ‖g‖ = 1; it is kept, as the official
    code runs it. ``atten_grad`` is changed in place, as there.
    """
    pcgrad = atten_grad[sim < 0]
    temp_ce_grad = ce_grad[sim < 0]
    dot_prod = torch.mul(pcgrad, temp_ce_grad).sum(dim=-1)
    dot_prod = dot_prod / torch.norm(temp_ce_grad, dim=-1)
    pcgrad = pcgrad - dot_prod.view(-1, 1) * temp_ce_grad
    atten_grad[sim < 0] = pcgrad
    return atten_grad


def official_gradient(model, X, delta, mask, y, target, s: OfficialSettings) -> torch.Tensor:
    """The ascent direction of one step, main.py:247-290 (``--attack_mode Attention``, no sparse pixels)."""
    prefix = token_model(model, "patch-fool").num_prefix_tokens
    out, atten = official_forward(model, X + torch.mul(delta, mask))  # main.py:247
    loss = F.cross_entropy(out, y)  # main.py:252, nn.CrossEntropyLoss(): batch mean
    grad = torch.autograd.grad(loss, delta, retain_graph=True)[0]  # main.py:255
    ce_loss_grad_temp = grad.view(X.size(0), -1).detach().clone()  # main.py:256
    for atten_num in range(len(atten) // 2):  # main.py:261-264: layers 1 .. depth // 2 - 1
        if atten_num == 0:
            continue
        atten_loss = official_attention_loss(atten[atten_num], target, prefix)
        atten_grad = torch.autograd.grad(atten_loss, delta, retain_graph=True)[0]  # main.py:274
        atten_grad_temp = atten_grad.view(X.size(0), -1)  # main.py:276
        cos_sim = F.cosine_similarity(atten_grad_temp, ce_loss_grad_temp, dim=1)  # main.py:277
        atten_grad = official_pcgrad(atten_grad_temp, ce_loss_grad_temp, cos_sim).view(grad.shape)  # main.py:283
        grad += atten_grad * s.atten_loss_weight  # main.py:290
    return grad


def _official_batch(model, pixels, y, count: int, s: OfficialSettings, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One official batch, main.py:119-338, on ``pixels`` in [0, 1]: the last iterate, in pixels, and its patches."""
    mu, std = _stats(pixels)
    X = (pixels - mu) / std  # utils.py:29, transforms.Normalize
    with torch.no_grad():  # main.py:126, the clean forward whose attention selects (delta = 0)
        _, atten = official_forward(model, X)
    prefix = token_model(model, "patch-fool").num_prefix_tokens
    max_patch_index = official_selection(atten, prefix, count, s.atten_select)
    mask = official_mask(max_patch_index, X.shape, patch_size(model))
    target = max_patch_index[:, 0]  # main.py:178
    delta = (torch.rand(X.shape, generator=generator).to(X.device) - mu) / std  # main.py:185
    delta = torch.max(torch.min(delta, (1 - mu) / std), (0 - mu) / std)  # main.py:191, utils.clamp
    X = torch.mul(X, 1 - mask)  # main.py:205
    delta.requires_grad = True  # main.py:209-210
    opt = torch.optim.Adam([delta], lr=s.attack_learning_rate)  # main.py:212
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)  # main.py:215
    for _ in range(s.train_attack_iters):  # main.py:218
        opt.zero_grad()  # main.py:220
        grad = official_gradient(model, X, delta, mask, y, target, s)
        opt.zero_grad()  # main.py:302-305
        delta.grad = -grad
        opt.step()
        scheduler.step()
        delta.data = torch.max(torch.min(delta, (1 - mu) / std), (0 - mu) / std)  # main.py:333
    # main.py:338, the last iterate ``X + delta · mask``, in pixels: outside the mask the image itself (not its
    # rounding through t · std + mean), inside it delta's pixels (clamped: float rounding only)
    perturb_x = torch.where(mask.bool(), (delta.detach() * std + mu).clamp(0, 1), pixels)
    return perturb_x, max_patch_index


def official_patch_fool(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, patches: int = 1, *, settings=None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official vanilla Patch-Fool on [0, 1] ``images``: adversarial images in [0, 1] and the (B, patches)
    patch indices it attacked. Batches of ``settings.batch_size`` as the official loader gives them."""
    s = settings or OfficialSettings()
    generator = torch.Generator().manual_seed(seed)  # main.py:76, torch.manual_seed(args.seed)
    advs, chosen = [], []
    for start in range(0, len(images), s.batch_size):
        sl = slice(start, start + s.batch_size)
        adv, index = _official_batch(model, images[sl], labels[sl], patches, s, generator)
        advs.append(adv)
        chosen.append(index)
    return torch.cat(advs), torch.cat(chosen)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _data(models: dict[str, nn.Module], n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first ``n`` test images both models classify correctly, and how many test images that took."""
    data = load_dataset("digits").dataset
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([int(data[i][1]) for i in range(len(data))])
    good = torch.stack([_predict(m, x) == y for m in models.values()]).all(0)
    chosen = torch.nonzero(good).flatten()[:n]
    return x[chosen], y[chosen], int(chosen[-1]) + 1


def _ellrobust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> np.ndarray:
    torch.manual_seed(0)  # patch-fool's random start draws from the global generator (the engine seeds it)
    adv = perturb(model, make_request("patch-fool"), x, y, eps=float(k), num_classes=10, seed=0)
    return (_predict(model, adv) != y).numpy()


def _agreement(name: str, official: np.ndarray, ours: np.ndarray, seconds: tuple[float, float]) -> None:
    both, only_o = int((official & ours).sum()), int((official & ~ours).sum())
    only_e, neither = int((~official & ours).sum()), int((~official & ~ours).sum())
    print(
        f"{name:<16} {official.mean():>8.3f} {ours.mean():>9.3f} {both:>5} {only_o:>6} {only_e:>6} {neither:>7}"
        f" {mcnemar_exact(only_o, only_e):>10.3g} {seconds[0]:>8.1f} {seconds[1]:>8.1f}"
    )


def _minimal(broken: dict[int, np.ndarray]) -> np.ndarray:
    """Each image's smallest budget of :data:`BUDGETS` that broke it; ``max + 1`` where none did."""
    k_star = np.full(len(broken[BUDGETS[0]]), BUDGETS[-1] + 1, dtype=float)
    for k in reversed(BUDGETS):
        k_star[broken[k]] = k
    return k_star


def _compare_official(models: dict[str, nn.Module], x, y) -> dict[str, np.ndarray]:
    print("\nOne patch: the official algorithm (transcribed) against ellrobust's patch-fool")
    print(f"{'model':<16} {'official':>8} {'ellrobust':>9} {'both':>5} {'only o':>6} {'only e':>6} {'neither':>7}"
          f" {'McNemar p':>10} {'s offic.':>8} {'s ellr.':>8}")  # fmt: skip
    ours = {}
    for name, model in models.items():
        start = time.perf_counter()
        adv, _ = official_patch_fool(model, x, y, 1, seed=0)
        official = (_predict(model, adv) != y).numpy()
        middle = time.perf_counter()
        ours[name] = _ellrobust(model, x, y, 1)
        _agreement(name, official, ours[name], (middle - start, time.perf_counter() - middle))
    return ours


def _compare_models(models: dict[str, nn.Module], x, y, one: dict[str, np.ndarray]) -> None:
    a, b = MODELS
    print(f"\nellrobust patch-fool success by patches; paired exact McNemar, {a} vs {b}")
    print(f"{'patches':>7} {a:>16} {b:>16} {'only ' + a:>21} {'only ' + b:>21} {'McNemar p':>10}")
    broken = {name: {1: one[name]} for name in models}
    for k in BUDGETS:
        for name, model in models.items():
            if k not in broken[name]:
                broken[name][k] = _ellrobust(model, x, y, k)
        ea, eb = broken[a][k], broken[b][k]
        only_a, only_b = int((ea & ~eb).sum()), int((~ea & eb).sum())
        p = mcnemar_exact(only_a, only_b)
        print(f"{k:>7} {ea.mean():>16.3f} {eb.mean():>16.3f} {only_a:>21} {only_b:>21} {p:>10.3g}")
    ka, kb = _minimal(broken[a]), _minimal(broken[b])
    d = kb - ka
    print(
        f"\nminimal patches (5 = not broken at 4): mean {a} {ka.mean():.2f}, {b} {kb.mean():.2f}; "
        f"{b} needs more on {int((d > 0).sum())}, fewer on {int((d < 0).sum())}, as many on {int((d == 0).sum())}; "
        f"exact sign test p = {sign_test(d):.3g}"
    )


def main(n: int) -> None:
    torch.manual_seed(0)
    models = {name: load_model(name) for name in MODELS}
    x, y, read = _data(models, n)
    print(
        f"n = {len(x)}: the first digits test images both models classify correctly (of the first {read}); "
        f"m_grad detach; {torch.get_num_threads()} CPU threads; patch {patch_size(models[MODELS[0]])} px"
    )
    one = _compare_official(models, x, y)
    _compare_models(models, x, y, one)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
