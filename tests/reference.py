"""The naive reference implementation of elliptical attention, shared by the model tests.

Written from the paper's definition (Nielsen et al., NeurIPS 2024, arXiv 2406.13770) as the
project's design notes state it (a DESIGN.md kept outside this repository), for one head with head
dimension d, with explicit loops and no code of ellrobust's attention::

    m_j  = mean over tokens n of |v^l[n, j] - v^(l-1)[n, j]|    (j = 1..d; all tokens, class token included)
    m    = m / max_j m_j                                         (max-scaling: every m_j in (0, 1])
    attn = softmax((q * m) k^T / sqrt(d)) v                      (m broadcast over the query tokens)

``v^l`` is this layer's value projection of its normed input, ``v^(l-1)`` the previous layer's; the
first layer, and every layer not in ``elliptical_layers``, uses standard attention. Agreement with it
checks the fused implementation (ellrobust's own ViTs, and those built from any checkpoint's shapes).
"""

from __future__ import annotations

import math

import torch


def naive_forward(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The formula above with explicit loops over samples and heads and an explicit softmax.

    Differentiable: ``m`` carries gradients only when the model's ``m_grad`` is ``full``.
    """
    cfg = model.cfg
    H, D = cfg.num_heads, cfg.embed_dim // cfg.num_heads
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    x = model.patch_embed.proj((images - mean) / std).flatten(2).transpose(1, 2)
    x = torch.cat([model.cls_token.expand(len(x), -1, -1), x], 1) + model.pos_embed
    B, N, C = x.shape
    v_prev = None
    for layer, blk in enumerate(model.blocks):
        h = blk.norm1(x)
        W, b = blk.attn.qkv.weight, blk.attn.qkv.bias
        out = torch.zeros_like(h)
        v_this = torch.zeros(B, H, N, D)
        for s in range(B):
            for head in range(H):
                q = h[s] @ W[head * D : (head + 1) * D].T + b[head * D : (head + 1) * D]
                k = h[s] @ W[C + head * D : C + (head + 1) * D].T + b[C + head * D : C + (head + 1) * D]
                v = h[s] @ W[2 * C + head * D : 2 * C + (head + 1) * D].T + b[2 * C + head * D : 2 * C + (head + 1) * D]
                v_this[s, head] = v
                if layer in cfg.elliptical_layers:
                    m = torch.stack([(v[:, j] - v_prev[s, head][:, j]).abs().mean() for j in range(D)])
                    if cfg.m_grad == "detach":
                        m = m.detach()
                    m = m / m.max()
                    q = q * m
                scores = q @ k.T / math.sqrt(D)
                probs = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
                probs = probs / probs.sum(dim=1, keepdim=True)
                out[s, :, head * D : (head + 1) * D] = probs @ v
        x = x + blk.attn.proj(out)
        x = x + blk.mlp(blk.norm2(x))
        v_prev = v_this
    return model.head(model.norm(x)[:, 0])
