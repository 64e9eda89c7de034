"""What every source of corrupted images answers: the plan of one batch, and the source protocol.

The generator (:mod:`.generate`) and the precomputed folders (:mod:`.precomputed`) both implement
:class:`CorruptionSource` and return :class:`BatchPlan` objects, and :mod:`.sources` chooses between
them, so these two types live below all three.

For one (corruption, severity) and one batch of positions in the run's selection, a plan says which
tasks produce the batch's images. A task is a small picklable callable that the run's worker pool
(or the main process, without workers) executes; the results of a batch's tasks, concatenated in
order, are its images as uint8 NHWC. Tasks read what they need from :data:`ellrobust.core.workers.SHARED`
(the image store) or from files, never from pixels pickled into them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
