"""Where corrupted images come from: generated on the fly, or a precomputed -C folder.

Every source answers the same question (:class:`~.batches.CorruptionSource`), so the corruption
stage does not care which it has; this module picks the run's. It sits above both sources, which
share only :mod:`.batches` and never import it. ``BatchPlan`` and ``CorruptionSource`` are
re-exported here for the corruption stage, which imports them from this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ellrobust.corruptions.batches import BatchPlan, CorruptionSource
from ellrobust.corruptions.generate import GeneratedSource, warm_up
from ellrobust.corruptions.precomputed import open_precomputed

__all__ = ["BatchPlan", "CorruptionSource", "open_source", "warm_up_generation"]


def open_source(ctx) -> CorruptionSource:
    """The run's source: ``--corruption-root`` when given, else on-the-fly generation."""
    if ctx.config.corruption_source is not None:
        return open_precomputed(Path(ctx.config.corruption_source), ctx)
    return GeneratedSource(ctx)


def warm_up_generation(corruptions: Sequence[str], severities: Sequence[int], protocol: str, image_size: int) -> None:
    """Run each corruption once on a blank image before the workers fork (they inherit numba's code)."""
    for name in corruptions:
        for severity in severities:
            warm_up(name, severity, protocol, image_size)
