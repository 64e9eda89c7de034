"""Numerical precision of the attack iterations: ``fp32``, ``tf32`` or ``bf16``.

Precision is an *attack* setting, never a *verdict* setting. The iterations of an attack (its
forward and input-gradient passes) may run in TF32 or under bf16 autocast, which is 2–4× faster on a
recent GPU; whether an image is classified correctly, clean or adversarial, is always decided by a
strict fp32 forward pass (:func:`precision_scope` with ``fp32``). A lower precision can therefore
only make an attack weaker (a noisier gradient), never count a broken image as robust: the
adversarial image it found is judged in fp32 like any other.

* ``fp32``: IEEE float32 everywhere, TF32 switched off for CUDA matmuls *and* cuDNN convolutions
  (PyTorch allows TF32 in cuDNN convolutions by default, and the patch embedding is a convolution).
* ``tf32``: float32 tensors, TF32 tensor-core matmuls and convolutions on CUDA. On a CPU there is no
  TF32: it computes exactly as ``fp32``.
* ``bf16``: ``torch.autocast`` to bfloat16 for the forward pass (the backward pass follows the
  forward's dtypes). Works on CUDA and on CPUs (fast where the CPU has AMX / AVX-512 BF16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import StrEnum

import torch

from ellrobust.errors import UsageError


class Precision(StrEnum):
    """The precision of the attack iterations (and of training and collapse forwards)."""

    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"


def parse_precision(value: str | Precision, option: str = "--precision") -> Precision:
    """A :class:`Precision` from user text, or a one-line :class:`UsageError` listing the choices."""
    try:
        return Precision(str(value).strip().lower())
    except ValueError:
        raise UsageError(f"{option} must be one of {', '.join(p.value for p in Precision)} (got {value!r}).") from None


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    """Allow or forbid TF32 in CUDA matmuls and cuDNN convolutions; restores the previous settings.

    torch ≥ 2.9 has the ``fp32_precision`` switches; older releases have ``allow_tf32``.
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(getattr(conv, "conv", None), "fp32_precision"):
        saved = (matmul.fp32_precision, conv.conv.fp32_precision)
        value = "tf32" if allowed else "ieee"
        matmul.fp32_precision, conv.conv.fp32_precision = value, value
        try:
            yield
        finally:
            matmul.fp32_precision, conv.conv.fp32_precision = saved
    else:  # pragma: no cover - torch < 2.9
        saved = (matmul.allow_tf32, conv.allow_tf32)
        matmul.allow_tf32, conv.allow_tf32 = allowed, allowed
        try:
            yield
        finally:
            matmul.allow_tf32, conv.allow_tf32 = saved


@contextlib.contextmanager
def precision_scope(precision: Precision | str, device: torch.device | str) -> Iterator[None]:
    """Run the enclosed forward (and backward) passes in ``precision`` on ``device``.

    ``fp32`` is strict IEEE float32, also on GPUs whose defaults allow TF32 somewhere: use it for
    every verdict. Settings are restored on exit, so scopes nest and leave no global state behind.
    """
    p = parse_precision(precision)
    kind = _device_type(device)
    if p is Precision.BF16:
        with _tf32(False), torch.autocast(device_type=kind, dtype=torch.bfloat16):
            yield
    else:
        with _tf32(p is Precision.TF32):
            yield


@torch.no_grad()
def fp32_predictions(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The classes ``model`` predicts for ``images`` in a strict fp32 forward pass: every verdict's pass.

    Whatever precision an attack's iterations ran in, "is this image classified correctly" is
    answered here, so a lower precision can only weaken an attack.
    """
    with precision_scope(Precision.FP32, images.device):
        return model(images).argmax(1)
