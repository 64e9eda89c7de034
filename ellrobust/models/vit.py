"""A compact Vision Transformer (DeiT) with optional elliptical attention, readable top to bottom.

Parameter names follow timm's ``VisionTransformer`` exactly (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``,
``head``), so every timm/DeiT checkpoint loads strictly into both the baseline and the elliptical
model: elliptical attention adds no parameter.

Why our own model instead of timm's: elliptical attention at layer ℓ needs the value vectors of
layer ℓ−1. timm's ``Block`` passes only the token tensor, so the values would have to be smuggled
through module state, which is how stale state leaks from one forward pass to the next. Here the
value tensor is handed from block to block explicitly and nothing survives a forward pass.

Shapes in comments: B batch, N tokens (patches + class token), C width, H heads, D = C / H.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from ellrobust.models.compiled import CompiledFunction


class MGrad(StrEnum):
    """Whether gradients flow through the elliptical metric ``m``."""

    DETACH = "detach"  # the paper: m is computed from detached values
    FULL = "full"  # adaptive attacks differentiate through m as well


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a DeiT-style ViT. ``elliptical_layers`` lists the 0-based elliptical blocks.

    The three flags cover the plain ViT variants whose checkpoints ellrobust loads (timm's names):

    * ``distilled``: DeiT's distillation token (``dist_token``) after the class token, with a second
      classifier (``head_dist``) on it; the logits are the mean of both heads, as in timm at inference.
    * ``layer_scale``: a learned per-channel scale on each residual branch (``ls1.gamma``,
      ``ls2.gamma``; DeiT-III, CaiT).
    * ``class_pos_embed``: position embeddings cover the prefix tokens as well (DeiT, original ViT);
      False adds them to the patches only, before the prefix tokens are prepended (DeiT-III,
      timm's ``no_embed_class``).

    Two more fields cover transformers' ViT/DeiT (:mod:`ellrobust.models.huggingface`):

    * ``dist_head``: whether a distilled model classifies with both heads (timm, transformers'
      ``DeiTForImageClassificationWithTeacher``); False: the class token's head alone, the
      distillation token still attending (transformers' ``DeiTForImageClassification``).
    * ``norm_eps``: the LayerNorms' epsilon (timm's 1e-6; transformers' configs say 1e-12).
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    elliptical_layers: tuple[int, ...] = ()
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    m_grad: MGrad = MGrad.DETACH
    distilled: bool = False
    layer_scale: bool = False
    class_pos_embed: bool = True
    dist_head: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        bad = [i for i in self.elliptical_layers if not 1 <= i < self.depth]
        if bad:
            raise ValueError(
                f"elliptical layers {bad} out of range 1..{self.depth - 1} (layer 0 has no previous values)"
            )

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token, and the distillation token if any."""
        return 1 + int(self.distilled)

    @property
    def pos_embed_tokens(self) -> int:
        """Rows of the position embeddings: the patches, plus the prefix tokens when they have positions."""
        return self.num_patches + (self.num_prefix_tokens if self.class_pos_embed else 0)

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def describe(self) -> dict:
        """The architecture as JSON-ready data (``m_grad`` is an attack setting, not architecture).

        ``dist_head`` and ``norm_eps`` appear only when they differ from timm's, so that the
        description (part of every unit's identity) of every timm-layout model stays what it was.
        """
        timm_like = {f: getattr(ViTConfig, f) for f in ("dist_head", "norm_eps")}
        out = {
            k: (v.value if isinstance(v, StrEnum) else v)
            for k, v in asdict(self).items()
            if k != "m_grad" and not (k in timm_like and v == timm_like[k])
        }
        return {"library": "ellrobust", **{k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}}


def _norm_fuses_abs(device: torch.device) -> bool:
    """Whether ``vector_norm(ord=1)`` is the cheap way to sum absolute values on ``device``.

    On CUDA it is one reduction kernel that takes ``|·|`` on the fly (and reads bfloat16 while
    accumulating in float32). The CPU's norm kernel is not vectorised: ~10× slower than abs + sum.
    """
    return device.type == "cuda"


def _abs_sum_over_tokens(d: torch.Tensor) -> torch.Tensor:
    """``Σ_n |d[..., n, j]|`` accumulated in float32, (B, H, 1, D); ``d`` is a fresh difference.

    Without autograd the ``abs`` overwrites ``d`` (one tensor fewer); with it, ``d`` stays intact
    for the backward pass.
    """
    if _norm_fuses_abs(d.device):
        return torch.linalg.vector_norm(d, ord=1, dim=-2, keepdim=True, dtype=torch.float32)
    d = d.abs() if d.requires_grad else d.abs_()
    return d.sum(dim=-2, keepdim=True, dtype=torch.float32)


def elliptical_metric(v: torch.Tensor, v_prev: torch.Tensor, *, detach: bool = True) -> torch.Tensor:
    """The diagonal Mahalanobis metric ``m`` of elliptical attention, per sample and per head.

    ``m_j = mean_n |v[n, j] − v_prev[n, j]|``, then max-scaled so that every ``m_j`` lies in (0, 1].
    The mean's 1/N cancels in the max-scaling like the paper's step δ, so the sum is taken instead.
    When all values are identical (``max_j m_j = 0``) there is no direction to prefer and the metric
    falls back to ``m ≡ 1`` (standard attention) instead of 0/0.

    Precision: the difference is taken in the values' dtype (bfloat16 under autocast; its rounding
    errors are unbiased and average out over the N tokens), the sum over tokens accumulates in float32,
    the max-scaling runs in float32, and ``m`` is rounded to the values' dtype once, at the end. A
    bfloat16 accumulator (8 significant bits) would lose the small terms of a sum of ~200 positive
    numbers; float32 costs nothing on CUDA because only the (B, H, 1, D) sums are float32: no
    (B, H, N, D) tensor is converted (a CPU converts the difference before summing it).

    Args:
        v: this layer's values, (B, H, N, D).
        v_prev: the previous layer's values, (B, H, N, D).
        detach: compute ``m`` without gradient, as the paper does. Then nothing is recorded for
            autograd and the scaling writes the result directly, with 0/0 = NaN replaced by 1; with
            gradients, a ``where`` on a safe denominator keeps the backward pass finite in that case.

    Returns:
        ``m`` of shape (B, H, 1, D) in ``v``'s dtype, ready to broadcast over the query tokens.
    """
    if detach:
        with torch.no_grad():
            m = _abs_sum_over_tokens(v - v_prev)
            out = torch.empty(m.shape, dtype=v.dtype, device=m.device)
            return torch.div(m, m.amax(dim=-1, keepdim=True), out=out).nan_to_num_(nan=1.0)
    m = _abs_sum_over_tokens(v - v_prev)  # (B, H, 1, D)
    m_max = m.amax(dim=-1, keepdim=True)  # (B, H, 1, 1)
    positive = m_max > 0
    return torch.where(positive, m / torch.where(positive, m_max, 1.0), 1.0).to(v.dtype)


def _scale_detached(q: torch.Tensor, v: torch.Tensor, v_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``q ⊙ m`` and ``m`` with ``m`` detached."""
    m = elliptical_metric(v, v_prev, detach=True)
    return q * m, m


def _scale_full(q: torch.Tensor, v: torch.Tensor, v_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``q ⊙ m`` and ``m`` with gradients through ``m``."""
    m = elliptical_metric(v, v_prev, detach=False)
    return q * m, m


#: The two scalings, each compiled once per state on CUDA (:mod:`ellrobust.models.compiled`).
_SCALINGS = {True: CompiledFunction(_scale_detached), False: CompiledFunction(_scale_full)}


def scale_queries(
    q: torch.Tensor, v: torch.Tensor, v_prev: torch.Tensor, *, detach: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The elliptical queries ``q ⊙ m`` (B, H, N, D) and the metric ``m`` (B, H, 1, D), in ``q``'s dtype.

    On CUDA the metric and the scaling run as one compiled function: a fused reduction for ``m`` and
    one pass for ``q ⊙ m`` (and one for its backward), instead of a kernel per elementwise op. It
    stays compiled for the whole process, or eager for the whole process if compiling is impossible
    (:class:`~ellrobust.models.compiled.CompiledFunction`); both compute the same numbers.
    """
    return _SCALINGS[detach](q, v, v_prev)


class Attention(nn.Module):
    """Multi-head self-attention; elliptical when ``elliptical`` is set and previous values exist."""

    def __init__(self, dim: int, num_heads: int, *, elliptical: bool = False, m_grad: MGrad = MGrad.DETACH) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.elliptical = elliptical
        self.m_grad = MGrad(m_grad)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, v_prev: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns the attention output (B, N, C), the queries, keys and values (B, H, N, D) and ``m`` or None.

        The queries are the ones the attention used: already multiplied by ``m`` in an elliptical
        layer, so ``softmax(q kᵀ / √D)`` are this layer's attention probabilities. Returning the
        tensors the forward pass computed anyway costs nothing, and analysis needs no second qkv.
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, N, D)
        m = None
        if self.elliptical and v_prev is not None:
            # (q ⊙ m) kᵀ / √D: only the queries are rescaled, so the fused attention kernel applies
            q, m = scale_queries(q, v, v_prev, detach=self.m_grad is MGrad.DETACH)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out), q, k, v, m


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


@dataclass(frozen=True)
class BlockOutput:
    """Everything one block produces; the engine's feature API reads from here, never from modules."""

    x: torch.Tensor  # residual stream after the block, (B, N, C)
    attn_out: torch.Tensor  # attention branch output before the residual add (after LayerScale), (B, N, C)
    attn_in: torch.Tensor  # normed input of the attention, (B, N, C)
    q: torch.Tensor  # this block's queries as the attention used them (⊙ m if elliptical), (B, H, N, D)
    k: torch.Tensor  # this block's keys, (B, H, N, D)
    v: torch.Tensor  # this block's values, (B, H, N, D)
    m: torch.Tensor | None  # elliptical metric, (B, H, 1, D), or None for standard attention


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch (DeiT-III); ``gamma`` is timm's name."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block; takes and returns the previous layer's values explicitly."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        elliptical: bool,
        m_grad: MGrad,
        layer_scale: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, elliptical=elliptical, m_grad=m_grad)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, v_prev: torch.Tensor | None) -> BlockOutput:
        h = self.norm1(x)
        a, q, k, v, m = self.attn(h, v_prev)
        a = self.ls1(a)
        x = x + a
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return BlockOutput(x=x, attn_out=a, attn_in=h, q=q, k=k, v=v, m=m)


class Normalize(nn.Module):
    """Per-channel (x − mean) / std inside the model, so every caller works in [0, 1] pixels.

    The buffers are not persistent: they stay out of the state dict, which keeps the timm layout.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, g, g) -> (B, g², C)


class VisionTransformer(nn.Module):
    """DeiT: class token, learned position embeddings, pre-norm blocks, linear head on the class token.

    Optionally DeiT's distillation token and head, and DeiT-III's LayerScale and patch-only position
    embeddings (:class:`ViTConfig`).
    """

    def __init__(self, cfg: ViTConfig, *, initialize: bool = True) -> None:
        """Build the model; ``initialize=False`` skips the random initialisation (seconds for DeiT-Base on
        a CPU: ``trunc_normal_`` is slow) when a strict checkpoint load will overwrite every parameter."""
        super().__init__()
        self.cfg = cfg
        self.normalize = Normalize(cfg.mean, cfg.std)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_embed_tokens, cfg.embed_dim))
        ell = set(cfg.elliptical_layers)
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_hidden,
                elliptical=i in ell,
                m_grad=cfg.m_grad,
                layer_scale=cfg.layer_scale,
                norm_eps=cfg.norm_eps,
            )
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.head_dist = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.distilled and cfg.dist_head else None
        if initialize:
            self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=0.02)
                nn.init.zeros_(mod.bias)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def is_elliptical(self) -> bool:
        return bool(self.cfg.elliptical_layers)

    @property
    def depth(self) -> int:
        return self.cfg.depth

    @property
    def num_prefix_tokens(self) -> int:
        return self.cfg.num_prefix_tokens

    @property
    def input_size(self) -> int:
        return self.cfg.img_size

    def describe(self) -> dict:
        return self.cfg.describe()

    def set_m_grad(self, m_grad: MGrad | str) -> None:
        """Switch every elliptical layer between the paper's detached ``m`` and the adaptive mode."""
        for blk in self.blocks:
            blk.attn.m_grad = MGrad(m_grad)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 3, S, S) -> tokens (B, P + g², C) with the P prefix tokens and positions."""
        x = self.patch_embed(self.normalize(images))
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if self.cfg.class_pos_embed:
            return torch.cat([*prefix, x], dim=1) + self.pos_embed
        return torch.cat([*prefix, x + self.pos_embed], dim=1)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normed tokens (B, N, C) -> logits: the class token's head, averaged with the distillation head's."""
        logits = self.head(tokens[:, 0])
        if self.head_dist is not None:
            logits = (logits + self.head_dist(tokens[:, 1])) / 2
        return logits

    def iter_blocks(self, images: torch.Tensor) -> Iterator[BlockOutput]:
        """Each block's outputs in turn, computed as they are asked for: the streaming feature API.

        A consumer that measures a block and lets it go keeps one block's tensors alive at a time,
        as the forward pass does (:mod:`ellrobust.measures.collapse_probe` measures collapse this way).
        """
        x = self.embed(images)
        v_prev = None
        for blk in self.blocks:
            out = blk(x, v_prev)
            yield out
            x, v_prev = out.x, out.v

    def forward_blocks(self, images: torch.Tensor) -> tuple[torch.Tensor, list[BlockOutput]]:
        """Every block's outputs kept: the final normed tokens (B, N, C) and one :class:`BlockOutput` per block."""
        outs = list(self.iter_blocks(images))
        return self.norm(outs[-1].x), outs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 3, S, S) -> logits (B, num_classes)."""
        x = self.embed(images)
        v_prev = None
        for blk in self.blocks:
            out = blk(x, v_prev)
            x, v_prev = out.x, out.v
        return self.classify(self.norm(x))
