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

from ellrobust.core.errors import UsageError


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


#: The float32 switches of torch ≥ 2.9 a scope sets, besides the global one: CUDA's matmuls and cuDNN's
#: convolutions (TF32 in ``tf32``), and oneDNN's on the CPU (always IEEE: a CPU has no TF32 here).
_CUDA_SWITCHES = ("cuda.matmul", "cudnn.conv")
_CPU_SWITCHES = ("mkldnn.matmul", "mkldnn.conv")


def _switch(path: str):
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj if hasattr(obj, "fp32_precision") else None


@contextlib.contextmanager
def _math_mode(tf32: bool) -> Iterator[None]:
    """IEEE float32 in every matmul and convolution backend, or TF32 in CUDA's; restores the settings.

    torch ≥ 2.9 has the ``fp32_precision`` switches (cuDNN's convolutions default to TF32 there, and a
    user's ``torch.backends.mkldnn.matmul.fp32_precision = "bf16"`` would lower CPU matmuls); older
    releases have ``allow_tf32``. The switches are global, not thread-local, so they also hold for
    the backward pass, whichever thread the autograd engine runs it on, as long as it runs in here.
    """
    switches = [(s, "tf32" if tf32 else "ieee") for s in map(_switch, _CUDA_SWITCHES) if s is not None]
    switches += [(s, "ieee") for s in map(_switch, _CPU_SWITCHES) if s is not None]
    if len(switches) == len(_CUDA_SWITCHES) + len(_CPU_SWITCHES):
        saved = [s.fp32_precision for s, _ in switches]
        for s, value in switches:
            s.fp32_precision = value
        try:
            yield
        finally:
            for (s, _), value in zip(switches, saved, strict=True):
                s.fp32_precision = value
    else:  # pragma: no cover - torch < 2.9
        matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
        saved_flags = (matmul.allow_tf32, conv.allow_tf32)
        matmul.allow_tf32, conv.allow_tf32 = tf32, tf32
        try:
            yield
        finally:
            matmul.allow_tf32, conv.allow_tf32 = saved_flags


@contextlib.contextmanager
def precision_scope(precision: Precision | str, device: torch.device | str) -> Iterator[None]:
    """Run the enclosed forward *and backward* passes in ``precision`` on ``device``.

    ``fp32`` is strict IEEE float32, also on GPUs whose defaults allow TF32 somewhere: use it for
    every verdict. ``fp32`` and ``tf32`` switch off any enclosing autocast, so an fp32 verdict inside
    a bf16 attack is still fp32. Compute gradients inside the scope: the math switches are read when
    the backward's kernels run (under ``bf16`` the backward of each autocast op follows its forward's
    dtypes either way). Settings are restored on exit, so scopes nest and leave no global state behind.
    """
    p = parse_precision(precision)
    kind = _device_type(device)
    if p is Precision.BF16:
        with _math_mode(tf32=False), torch.autocast(device_type=kind, dtype=torch.bfloat16):
            yield
    else:
        with _math_mode(tf32=p is Precision.TF32), torch.autocast(device_type=kind, enabled=False):
            yield


@torch.no_grad()
def fp32_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The logits of ``model`` for ``images`` in a strict fp32 forward pass (what every verdict reads)."""
    with precision_scope(Precision.FP32, images.device):
        return model(images)


def fp32_predictions(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The classes ``model`` predicts for ``images`` in a strict fp32 forward pass: every verdict's pass.

    Whatever precision an attack's iterations ran in, "is this image classified correctly" is
    answered here, so a lower precision can only weaken an attack.
    """
    return fp32_logits(model, images).argmax(1)
