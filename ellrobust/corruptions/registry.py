"""The corruption registry and name resolution (``all``, ``extra``, misspelt names).

The 15 *benchmark* corruptions (four groups: noise, blur, weather, digital) define mCE; the 4
*extra* ones (the paper's held-out validation corruptions) are available by name or as ``extra``.
This module imports nothing heavy: ``ellrobust attacks`` lists it, and ``imagecorruptions`` pulls in
OpenCV, numba and scikit-image, so that import waits until an image is actually corrupted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ellrobust.registry import Registry


class CorruptionSet(StrEnum):
    """Which list a corruption belongs to: the 15 that define mCE, or the 4 held-out extras."""

    BENCHMARK = "benchmark"
    EXTRA = "extra"


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Attributes:
        name: the ``imagecorruptions`` function name, also the ImageNet-C / CIFAR-10-C folder name.
        group: noise, blur, weather, digital (benchmark) or extra.
        set: ``"benchmark"`` or ``"extra"`` (a :class:`CorruptionSet`: a str that prints as its value).
        description: one line for listings.
        seed_argument: the function draws from a generator of its own instead of NumPy's global one and
            takes its seed as a ``seed`` keyword: ``glass_blur`` shuffles pixels inside a numba
            function whose random state is separate from NumPy's (the fork seeds it with
            ``np.random.seed(seed)`` inside the jitted code), and ``impulse_noise`` passes ``seed`` to
            scikit-image's ``random_noise``. Without the keyword both are unseeded and irreproducible.
    """

    name: str
    group: str
    set: CorruptionSet
    description: str
    seed_argument: bool = False


#: (name, group, description) in benchmark order: the order of ImageNet-C's tables and of mCE.
_ENTRIES = (
    ("gaussian_noise", "noise", "additive Gaussian noise"),
    ("shot_noise", "noise", "Poisson (photon) noise"),
    ("impulse_noise", "noise", "salt-and-pepper noise"),
    ("defocus_blur", "blur", "disk-kernel defocus"),
    ("glass_blur", "blur", "blur + local pixel shuffling (frosted glass)"),
    ("motion_blur", "blur", "directional blur at a random angle"),
    ("zoom_blur", "blur", "average of centre zooms"),
    ("snow", "weather", "falling snow layer"),
    ("frost", "weather", "overlay of a frost photograph (random crop)"),
    ("fog", "weather", "plasma-fractal haze"),
    ("brightness", "weather", "raised V channel in HSV"),
    ("contrast", "digital", "pixels pulled towards the image mean"),
    ("elastic_transform", "digital", "smooth random displacement field"),
    ("pixelate", "digital", "box down-sampling, nearest up-sampling"),
    ("jpeg_compression", "digital", "JPEG at low quality"),
    ("speckle_noise", "extra", "multiplicative Gaussian noise"),
    ("gaussian_blur", "extra", "Gaussian blur"),
    ("spatter", "extra", "water or mud splashes"),
    ("saturate", "extra", "scaled and shifted HSV saturation (a no-op on grey images at severities 1-3)"),
)
_SEEDED = frozenset({"glass_blur", "impulse_noise"})


def _registry(entries: Iterable[tuple[str, str, str]]) -> Registry[Corruption]:
    registry: Registry[Corruption] = Registry("corruption")
    for name, group, description in entries:
        corruption_set = CorruptionSet.EXTRA if group == "extra" else CorruptionSet.BENCHMARK
        registry.add(name, Corruption(name, group, corruption_set, description, seed_argument=name in _SEEDED))
    return registry


CORRUPTIONS: Registry[Corruption] = _registry(_ENTRIES)

#: Names that stand for a whole set on the command line.
SET_ALIASES: dict[str, CorruptionSet] = {"all": CorruptionSet.BENCHMARK, "extra": CorruptionSet.EXTRA}


def names_in(corruption_set: CorruptionSet) -> tuple[str, ...]:
    """The registered names of one set, in benchmark order."""
    return tuple(name for name, c in CORRUPTIONS.items() if c.set == corruption_set)


def resolve_corruptions(requested: Iterable[str]) -> tuple[str, ...]:
    """Expand ``all`` / ``extra`` and validate names; order kept, duplicates dropped.

    Raises:
        UsageError: for an unknown name, with the closest registered names as suggestions.
    """
    out: list[str] = []
    for name in requested:
        key = name.strip().lower()
        out.extend(names_in(SET_ALIASES[key]) if key in SET_ALIASES else (CORRUPTIONS.get(key).name,))
    return tuple(dict.fromkeys(out))
