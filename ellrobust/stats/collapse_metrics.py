"""Representation-collapse metrics: pure functions of token matrices and attention probabilities.

Every function works on a batch and returns one number per image (and per head where heads exist),
so callers can average over any image set by summing and dividing once at the end.

Shapes: B batch, H heads, N tokens, C channels.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

#: The CPU flash-attention kernel, which also returns each row's logsumexp (None on a torch without it).
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)

#: Rows shorter than this count as zero vectors (their cosine with anything is 0, as in ``F.normalize``).
_NORM_EPS = 1e-12


def token_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over all ordered pairs of distinct tokens, in O(N·C).

    With unit rows ``u``, ``Σ_{a≠b} u_a·u_b = ‖Σ_a u_a‖² − Σ_a ‖u_a‖² = ‖Σ u‖² − N``, so the mean
    over the ``N(N−1)`` pairs needs one sum over tokens instead of the N×N Gram matrix. The sum
    ``Σ_a x_a / ‖x_a‖`` is taken as one weighted sum, without materialising the unit rows, so the
    metric reads the tokens twice and allocates only (B, N) and (B, C). This is the paper's
    over-smoothing measure: 1 when all tokens point the same way, ≈ 0 for unrelated tokens.

    Args:
        x: tokens, (B, N, C) with N ≥ 2.

    Returns:
        (B,) mean pairwise cosine similarity, in float32.
    """
    n = x.shape[-2]
    if n < 2:
        raise ValueError(f"token cosine needs at least 2 tokens (got {n})")
    x = x.float()
    inv_norm = torch.linalg.vector_norm(x, dim=-1).clamp_min(_NORM_EPS).reciprocal()  # (B, N)
    s = (inv_norm.unsqueeze(-2) @ x).squeeze(-2)  # (B, C) = Σ_a u_a
    return (s.square().sum(dim=-1) - n) / (n * (n - 1))


def token_cosine_naive(x: torch.Tensor) -> torch.Tensor:
    """The direct O(N²·C) average of :func:`token_cosine`, kept as the reference for tests."""
    n = x.shape[-2]
    u = F.normalize(x.float(), dim=-1, eps=_NORM_EPS)  # (B, N, C)
    gram = u @ u.transpose(-2, -1)  # (B, N, N)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return gram[..., off_diagonal].mean(dim=-1)


def attention_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of each query's attention distribution, per head.

    Low entropy means sharp attention; entropy ``log Nk`` means uniform attention, which averages
    all tokens into one and drives collapse. ``xlogy`` makes ``0 · log 0 = 0``.

    Args:
        p: attention probabilities, (B, H, Nq, Nk), each row summing to 1 over the keys. Passing a
            subset of the query rows (e.g. without the class token) averages over those only.

    Returns:
        (B, H) entropy averaged over the query tokens.
    """
    p = p.float()
    return -torch.xlogy(p, p).sum(dim=-1).mean(dim=-1)


def attention_entropy_qk(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """:func:`attention_entropy` of ``softmax(q kᵀ / √D)``, without forming the probabilities.

    With scores ``s = q kᵀ / √D`` and ``p = softmax(s)``, each row's entropy is
    ``−Σ p log p = logsumexp(s) − Σ p s``, and ``Σ_j p_j s_j = q · (Σ_j p_j k_j) / √D`` is the
    query's dot product with the attention output for values = keys. On CPU the fused attention
    kernel returns that output together with ``logsumexp(s)``, so the entropy costs about one
    ``q kᵀ`` and never materialises the (B, H, Nq, Nk) probabilities. Elsewhere (or for dtypes
    the kernel lacks) the scores are formed explicitly and the same identity is used. Both forms
    are shift-invariant per row, hence safe for large scores; the result is clamped at 0 against
    rounding when attention is one-hot.

    Args:
        q: queries as the attention used them (already ⊙ m in an elliptical layer), (B, H, Nq, D).
            Passing a subset of the query rows averages over those only.
        k: keys, (B, H, Nk, D).

    Returns:
        (B, H) entropy in nats averaged over the query tokens, in float32.
    """
    scale = q.shape[-1] ** -0.5
    if _FLASH_CPU is not None and q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64):
        q = q.contiguous()
        out, lse = _FLASH_CPU(q, k, k, scale=scale)[:2]  # (B,H,Nq,D), (B,H,Nq)
        expected = torch.linalg.vecdot(q, out) * scale  # Σ p s, (B, H, Nq)
    else:
        s = (q.float() * scale) @ k.float().transpose(-2, -1)  # (B, H, Nq, Nk)
        lse = s.logsumexp(dim=-1)
        expected = torch.linalg.vecdot(s.softmax(dim=-1), s)
    return (lse.float() - expected.float()).clamp_min(0).mean(dim=-1)


def token_gram(x: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of each token matrix on its smaller side, ``X Xᵀ`` or ``Xᵀ X``, in float64.

    Its eigenvalues are the squared singular values of ``X`` (:func:`effective_rank_from_gram`).
    float64 keeps the eigenvalues of a rank-deficient matrix that should be 0 at ~1e-16 of the
    largest (σ ~1e-8 σ_max): in float32 they are ~1e-7 (σ ~3e-4 σ_max each), and a collapsed matrix
    with 191 such σ would read an effective rank well above 1.

    Args:
        x: tokens, (B, N, C).

    Returns:
        (B, k, k) with k = min(N, C).
    """
    x = x.double()
    xt = x.transpose(-2, -1)
    return x @ xt if x.shape[-2] <= x.shape[-1] else xt @ x


def symmetric_eigenvalues(gram: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a batch of symmetric matrices, computed on the CPU cores, the batch split among them.

    LAPACK's solver (``syevd``) takes one matrix at a time, and torch loops over a batch on one core:
    on the CPU, MKL's own threads only slow matrices of this size down (measured on 2 cores, 192×192:
    3× slower with 2 threads than with 1). Chunks of the batch on one thread per core run side by side
    instead (2.1× on 2 cores). On CUDA a batched ``eigvalsh`` of matrices larger than 32×32 also loops,
    one cuSOLVER call per matrix, so the matrices are solved on the host's cores as well: the Gram
    products stay on the GPU, only the (B, k, k) matrices travel (``benchmarks/bench_collapse.py
    --device cuda`` measures the alternatives).

    Args:
        gram: (B, k, k) symmetric matrices.

    Returns:
        (B, k) eigenvalues in ascending order, on ``gram``'s device.
    """
    host = gram.detach().cpu()
    threads = torch.get_num_threads()
    parts = min(threads, len(host))
    if parts <= 1:
        return torch.linalg.eigvalsh(host).to(gram.device)
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(parts) as pool:
            values = torch.cat(list(pool.map(torch.linalg.eigvalsh, host.chunk(parts))))
    finally:
        torch.set_num_threads(threads)
    return values.to(gram.device)


def effective_rank_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """:func:`effective_rank` of the token matrices whose :func:`token_gram` is ``gram``, (B, k, k) -> (B,)."""
    s = symmetric_eigenvalues(gram).clamp_min(0).sqrt()  # (B, k) singular values
    total = s.sum(dim=-1, keepdim=True)  # (B, 1)
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    rank = torch.exp(-torch.xlogy(p, p).sum(dim=-1))
    return torch.where(total.squeeze(-1) > 0, rank, torch.zeros_like(rank)).float()


def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """Effective rank of each token matrix (Roy & Vetterli 2007): ``exp(H(σ / ‖σ‖₁))``.

    ``σ`` are the singular values of the (uncentred) N×C token matrix. The result lies in
    [1, min(N, C)]: 1 when all tokens are multiples of one vector (full collapse), min(N, C) when
    every direction carries the same energy. Unlike a thresholded rank it is continuous, so it shows
    gradual collapse layer by layer. A zero matrix has no spectrum and gets effective rank 0.

    The singular values come from the eigenvalues of the smaller Gram matrix (:func:`token_gram`),
    not from an SVD (on the CPU 2–3× faster for ViT-sized token matrices), in float64.

    Any leading dimensions batch: pass every layer's tokens stacked, (L·B, N, C), to pay for one
    batched eigensolver call instead of one per layer.

    Args:
        x: tokens, (B, N, C).

    Returns:
        (B,) effective rank, in float32.
    """
    return effective_rank_from_gram(token_gram(x))
