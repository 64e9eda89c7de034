"""The patch threat model shared by ``patch``, ``patch-fool`` and ``attention-fool``.

A patch budget counts patches: the attack may set the pixels of ``eps`` patch-sized areas of the image
to anything in [0, 1], and nothing else. The patch is the model's own (its tokens' size), read from the
model, never assumed to be 16: ellrobust's ViT (``cfg.patch_size``) or a timm VisionTransformer
(``patch_embed.patch_size``), behind any of ellrobust's wrappers. A model without patches is refused in
one line. The size of a perturbation in this norm (:func:`patch_area`) is the area of the pixels it
changed, in patches: ``k`` aligned patches are ``k``; ``k`` free squares of the patch's side are at most
``k`` wherever they lie.

Budgets: the eps list of a patch attack is its list of patch counts, given per attack (a suite's
``eps = [1, 2]``, ``ellrobust.evaluate(attacks={"patch-fool": {"eps": [1, 2]}})``; default 1, 2 and 4). The
run's ``--eps`` are pixel budgets and never apply to a patch attack.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ellrobust.core.errors import UsageError
from ellrobust.models.base import TokenModel, has_tokens
from ellrobust.models.vit import BlockOutput

#: The norm of every patch attack: budgets are numbers of patches.
PATCH_NORM = "patch"
#: The budgets of a patch attack when the request names none.
DEFAULT_PATCHES = (1.0, 2.0, 4.0)


def _chain(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` and the modules it wraps (``Float32Logits.model``, ``ModuleClassifier.net``, ...)."""
    seen: set[int] = set()
    while isinstance(model, nn.Module) and id(model) not in seen:
        seen.add(id(model))
        yield model
        model = getattr(model, "model", None) or getattr(model, "net", None) or getattr(model, "inner", None)


def _side(size: object) -> int | None:
    if isinstance(size, int):
        return size
    if isinstance(size, tuple | list) and len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    return None


def patch_size(model: nn.Module) -> int:
    """The side, in pixels, of ``model``'s square patches; a model without them is refused in one line."""
    for module in _chain(model):
        cfg = getattr(module, "cfg", None)
        side = _side(getattr(cfg, "patch_size", None)) or _side(
            getattr(getattr(module, "patch_embed", None), "patch_size", None)
        )
        if side:
            return side
    raise UsageError(
        f"{type(model).__name__} has no patches (no cfg.patch_size or patch_embed.patch_size with square patches); "
        "patch attacks need a ViT: drop the patch attacks for this model."
    )


def token_model(model: nn.Module, attack: str) -> TokenModel:
    """The module of ``model``'s chain that exposes its blocks' queries and keys (the collapse probe's interface)."""
    for module in _chain(model):
        if has_tokens(module):
            return module
    raise UsageError(
        f"{attack} reads the attention's queries and keys, and {type(model).__name__} exposes no tokens "
        "(depth, num_prefix_tokens, iter_blocks); use the patch attack instead."
    )


def patch_mask(indices: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """(B, 1, grid·side, grid·side) mask, 1 on the patches ``indices`` (B, k) name (row-major token order)."""
    B = indices.shape[0]
    cells = torch.zeros(B, grid * grid, device=indices.device)
    cells.scatter_(1, indices.long(), 1.0)
    cells = cells.view(B, 1, grid, grid)
    return cells.repeat_interleave(side, dim=2).repeat_interleave(side, dim=3)


def patch_area(adv: torch.Tensor, images: torch.Tensor, side: int) -> torch.Tensor:
    """Per image, the area of the pixels ``adv`` changed (any channel), in patches of ``side`` pixels."""
    changed = (adv != images).any(dim=1).flatten(1).sum(1)
    return changed.float() / (side * side)


def patches_touched(adv: torch.Tensor, images: torch.Tensor, side: int) -> list[list[int]]:
    """Per image, the tokens (row-major patch indices) in which ``adv`` changed a pixel."""
    changed = (adv != images).any(dim=1, keepdim=True).float()
    cells = torch.nn.functional.max_pool2d(changed, side, side).flatten(1)
    return [torch.nonzero(row).flatten().tolist() for row in cells]


def budget_patches(eps: float) -> int:
    """A patch budget as a whole number of patches; a fractional one is refused in one line."""
    count = round(float(eps))
    if count < 1 or abs(count - float(eps)) > 1e-9:
        raise UsageError(
            f"a patch budget is a whole number of patches ≥ 1 (got {eps:g}); give the attack eps = [1, 2, 4]."
        )
    return count


def logits_and_blocks(tokens, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[BlockOutput]]:
    """Logits and every block's outputs in one pass where the model can give both (ellrobust's ViT)."""
    if hasattr(tokens, "forward_blocks") and hasattr(tokens, "classify"):
        final, blocks = tokens.forward_blocks(x)
        return tokens.classify(final), blocks
    return model(x), list(tokens.iter_blocks(x))


def record_fooled(best, done, active, iterate, logits, labels) -> None:
    """In place: the images of ``active`` (indices into the batch) that ``logits`` (in the attack's precision)
    show fooled keep ``iterate`` in ``best`` and are marked ``done``.

    ``iterate``, ``logits`` and ``labels`` are the active images' alone: a patch attack drops an image from
    its batch once it is fooled (its update is its own, so the others' steps do not change), which is
    where most of its cost goes on a model it breaks.
    """
    fooled = logits.argmax(1) != labels
    chosen = active[fooled]
    best[chosen] = iterate[fooled].clamp(0, 1).detach()
    done[chosen] = True


def patch_counts(value: object, label: str) -> tuple[float, ...]:
    """A patch attack's budgets: whole numbers of patches ≥ 1 (a list, or one), as floats like every eps."""
    values = value if isinstance(value, list | tuple) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise UsageError(f"{label} must be whole numbers of patches ≥ 1, such as [1, 2, 4] (got {value!r}).")
    return tuple(float(v) for v in values)
