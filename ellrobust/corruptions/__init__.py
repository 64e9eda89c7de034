"""Floor 3: ImageNet-C corruptions (Hendrycks & Dietterich 2019).

The registry and name resolution are :mod:`.registry`. Images are produced by the maintained
``imagecorruptions-imaug`` fork (module ``imagecorruptions``, see :mod:`.generate`) or with
CIFAR-10-C's constants (:mod:`.cifar10c`), or read from a precomputed ImageNet-C / CIFAR-10-C
folder (:mod:`.precomputed`); :mod:`.sources` picks the run's source. This file only re-exports the
registry, so importing it stays as light as the registry itself.
"""

from ellrobust.corruptions.catalog import (
    CORRUPTIONS,
    IMAGENET_3DCC,
    SET_ALIASES,
    Corruption,
    CorruptionSet,
    every_corruption,
    find_corruption,
    is_corruption,
    names_in,
    resolve_corruptions,
)

__all__ = [
    "CORRUPTIONS",
    "IMAGENET_3DCC",
    "SET_ALIASES",
    "Corruption",
    "CorruptionSet",
    "every_corruption",
    "find_corruption",
    "is_corruption",
    "names_in",
    "resolve_corruptions",
]
