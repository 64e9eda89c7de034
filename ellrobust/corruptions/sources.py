"""Where corrupted images come from: generated on the fly, or a precomputed -C folder.

Every source hands out the same thing, so the corruption stage does not care which it has: for one
(corruption, severity), a dataset whose item ``i`` is batch ``i`` of the run's selected images,
``(images float NCHW in [0, 1], labels int64, n_generated)``, in ``ctx.indices`` order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import Dataset


class CorruptionSource(Protocol):
    """What the corruption stage needs from a source of corrupted images.

    Attributes:
        label: recorded in every row's ``params`` as ``source`` (the generator and its version, or
            the precomputed layout), so numbers from different sources are never mixed up.
        imagenet: the images are ImageNet's, so CE/mCE are normalised by AlexNet's errors.
    """

    label: str
    imagenet: bool

    def check(self, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
        """Raise a one-line UsageError if some requested corruption or severity is unavailable."""
        ...

    def chunks(self, corruption: str, severity: int) -> Dataset[tuple[torch.Tensor, torch.Tensor, int]]:
        """The selected images under one corruption and severity, one batch per item."""
        ...


def open_source(ctx) -> CorruptionSource:
    """The run's source: ``--corruption-root`` when given, else on-the-fly generation."""
    if ctx.config.corruption_source is not None:
        from ellrobust.corruptions.precomputed import open_precomputed

        return open_precomputed(Path(ctx.config.corruption_source), ctx)
    from ellrobust.corruptions.generate import GeneratedSource

    return GeneratedSource(ctx)
