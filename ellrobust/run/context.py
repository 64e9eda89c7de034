"""What every measure sees while it runs: the loaded models, the images, progress, and the units so far."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ellrobust.attacks.patches import PATCH_NORM
from ellrobust.core.distributed import DistInfo, batches
from ellrobust.corruptions.protocol import resolve_protocol
from ellrobust.models.base import has_tokens
from ellrobust.request.config import EvalConfig
from ellrobust.results import CORRECT
from ellrobust.run.units import Unit, UnitResult, clean_unit

if TYPE_CHECKING:
    from ellrobust.core.workers import WorkerPool
    from ellrobust.data import LoadedDataset
    from ellrobust.data.image_store import ImageStore


@dataclass
class LoadedModel:
    """A model of the run: any :class:`~ellrobust.models.base.Classifier` (ellrobust's ViT, a timm or
    torchvision model)."""

    name: str
    module: nn.Module
    digest: str
    weights: str  # where the weights came from: a file, a shipped checkpoint, or a seeded initialisation

    @property
    def elliptical(self) -> bool:
        return bool(self.module.is_elliptical)

    @property
    def tokens(self) -> bool:
        """Whether the collapse probe can read the model's tokens."""
        return has_tokens(self.module)

    def architecture(self) -> dict:
        """The model's architecture as JSON-ready data: part of every unit's identity and of run.json.

        The weights' digest alone does not identify a model: the same weights with other elliptical
        layers compute other logits, and another library's model names its library and architecture.
        """
        return self.module.describe()


@dataclass(frozen=True)
class ProgressEvent:
    kind: str  # "start", "advance", "end"
    label: str
    total: int = 0
    advance: int = 0
    cached: bool = False


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    return None


@dataclass(frozen=True)
class Batch:
    """One batch of a unit: its positions in the selection, images and labels on the device, and its seed.

    The seed is the unit's seed plus the batch's index in the fixed cut of the unit's images, so a
    batch's random numbers (random starts, SPSA's directions) are the same whichever rank runs it and
    whatever ran before it.
    """

    positions: list[int]
    images: torch.Tensor
    labels: torch.Tensor
    seed: int


@dataclass
class RunContext:
    """What every stage sees: the request, the data, the models, and the units finished so far.

    Stages read images through :meth:`batches` and collect per-position results with :meth:`gather`:
    both work the same in one process and under ``torchrun`` (see :mod:`ellrobust.core.distributed`).
    Images come from the run's :class:`~ellrobust.data.image_store.ImageStore` (decoded once per run) and
    heavy per-image work goes to the run's one :class:`~ellrobust.core.workers.WorkerPool`.
    """

    config: EvalConfig
    data: LoadedDataset
    indices: list[int]
    models: dict[str, LoadedModel]
    progress: ProgressFn
    dist: DistInfo = field(default_factory=DistInfo)
    store: ImageStore | None = None
    pool: WorkerPool | None = None
    results: dict[Unit, UnitResult] = field(default_factory=dict)  # every unit finished so far
    run_dir: Path | None = None  # where units write files beside their rows (--save-adversarial)
    # Out-of-distribution images (imagenet-o): their dataset indices, stored after the selection, at
    # store positions len(indices) onwards; only the OOD stage reads them (every other stage reads
    # the selection, the in-distribution images).
    ood_indices: list[int] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.dist.device(self.config.device))

    @functools.cached_property
    def indices_digest(self) -> str:
        """A hash of the dataset indices of every stored image, in store order: the selection, then
        the OOD images (part of every unit's identity), computed once."""
        return hashlib.sha256(np.asarray(self.indices + self.ood_indices, dtype=np.int64).tobytes()).hexdigest()

    @property
    def image_size(self) -> int:
        """The side of the stored images (the dataset's nominal size before the store exists)."""
        return int(self.store.image_shape[-1]) if self.store is not None else self.data.spec.image_size

    @property
    def corruption_protocol(self) -> str:
        """``imagenet-c``, ``imagenet-c-raw`` or ``cifar-10-c``: the request's choice, ``auto`` resolved by size."""
        return resolve_protocol(self.config.corruption_protocol, self.image_size).value

    def clean_outcomes(self, model: str) -> np.ndarray:
        """Which images ``model`` classifies correctly (the clean stage's unit; it runs before any other)."""
        return self.results[clean_unit(model)].per_image.column(model, CORRECT)

    def owned_batches(self, positions: list[int] | None = None) -> list[tuple[int, list[int]]]:
        """This rank's ``(batch index, positions)`` of ``positions`` (0-based in the selection; None: all).

        The cut into batches is the same in every process layout; batch ``b`` belongs to rank
        ``b % world_size``.
        """
        positions = list(range(len(self.indices))) if positions is None else list(positions)
        return [(b, chunk) for b, chunk in enumerate(batches(positions, self.config.batch_size)) if self.dist.owns(b)]

    def batches(self, positions: list[int] | None, label: str, seed: int) -> Iterator[Batch]:
        """This rank's batches of ``positions`` (0-based within the selection; None: all of them).

        Yields :class:`Batch` es read from the image store, on the device. The global RNG is seeded
        with each batch's seed (``seed`` + its index) before the batch is yielded, for code that draws
        from it (torchattacks' random starts). Emits progress events for ``label``.
        """
        mine = self.owned_batches(positions)
        self.progress(ProgressEvent("start", label, total=len(mine)))
        for b, chunk in mine:
            seed_everything(seed + b)
            x, y = self.store.batch(chunk, self.device)
            yield Batch(chunk, x, y, (seed + b) & 0x7FFFFFFF)
            self.progress(ProgressEvent("advance", label, advance=1))
        self.progress(ProgressEvent("end", label))

    def gather(self, values: dict[int, float], size: int | None = None, dtype=np.float64) -> np.ndarray:
        """Per-position values from every rank as one array over the selection (or ``size``)."""
        return self.dist.gather_values(values, len(self.indices) if size is None else size, dtype)

    def eps_for(self, request) -> tuple[float, ...]:
        if request.eps is not None:
            return request.eps
        if request.norm == PATCH_NORM:  # patch counts: the run's pixel budgets (--eps) never apply
            return self.config.patches or request.default_eps
        if self.config.eps is not None:
            return self.config.eps
        return request.default_eps or self.data.spec.default_eps


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
