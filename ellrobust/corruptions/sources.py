"""Where corrupted images come from: generated on the fly, or a precomputed -C folder.

Every source answers the same question, so the corruption stage does not care which it has: for one
(corruption, severity) and one batch of positions in the run's selection, which tasks produce the
batch's images. A task is a small picklable callable that the run's worker pool (or the main process,
without workers) executes; the results of a batch's tasks, concatenated in order, are its images as
uint8 NHWC. Tasks read what they need from :data:`ellrobust.workers.SHARED` (the image store) or
from files, never from pixels pickled into them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class BatchPlan:
    """How one batch's corrupted images are produced.

    Attributes:
        tasks: callables whose results (uint8 arrays (k, H, W, C)) concatenate to the batch's images.
        generated: images these tasks corrupt (0 when they only read a cache or a precomputed set).
        on_finish: called once with the batch's images and labels (the generator's cache stores them).
    """

    tasks: Sequence[Callable[[], np.ndarray]]
    generated: int = 0
    on_finish: Callable[[np.ndarray, np.ndarray], None] | None = field(default=None, repr=False)

    def finish(self, images: np.ndarray, labels: np.ndarray) -> None:
        if self.on_finish is not None:
            self.on_finish(images, labels)


class CorruptionSource(Protocol):
    """What the corruption stage needs from a source of corrupted images.

    Attributes:
        label: recorded in every row's ``params`` as ``source`` (the generator and its version, or
            the precomputed layout), so numbers from different sources are never mixed up.
        params: further settings recorded in every row's ``params`` (the generation protocol).
        imagenet: the images are ImageNet's, so CE/mCE are normalised by AlexNet's errors.
    """

    label: str
    params: Mapping[str, object]
    imagenet: bool

    def check(self, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
        """Raise a one-line UsageError if some requested corruption or severity is unavailable."""
        ...

    def batch_plan(self, corruption: str, severity: int, positions: list[int]) -> BatchPlan:
        """The tasks that produce the images of ``positions`` under one corruption and severity."""
        ...

    def reserve(self, plans: Sequence[BatchPlan]) -> None:
        """Before any of ``plans`` runs: raise a one-line error if what they will write cannot fit on disk."""
        ...


def open_source(ctx) -> CorruptionSource:
    """The run's source: ``--corruption-root`` when given, else on-the-fly generation."""
    if ctx.config.corruption_source is not None:
        from ellrobust.corruptions.precomputed import open_precomputed

        return open_precomputed(Path(ctx.config.corruption_source), ctx)
    from ellrobust.corruptions.generate import GeneratedSource

    return GeneratedSource(ctx)


def warm_up_generation(corruptions: Sequence[str], severities: Sequence[int], protocol: str, image_size: int) -> None:
    """Run each corruption once on a blank image before the workers fork (they inherit numba's code)."""
    from ellrobust.corruptions.generate import warm_up

    for name in corruptions:
        for severity in severities:
            warm_up(name, severity, protocol, image_size)
