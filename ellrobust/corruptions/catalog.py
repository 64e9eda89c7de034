"""The corruption registries and name resolution (``all``, ``extra``, ``3dcc``, misspelt names).

The 15 *benchmark* corruptions (four groups: noise, blur, weather, digital) define mCE; the 4
*extra* ones (the paper's held-out validation corruptions) are available by name or as ``extra``.
The 12 corruptions of ImageNet-3DCC (Kar et al., "3D Common Corruptions and Data Augmentation",
CVPR 2022; names as its released folders, https://github.com/EPFL-VILAB/3DCommonCorruptions) are a
registry of their own, :data:`IMAGENET_3DCC`, named by ``3dcc``: they need each image's depth, so they
are read from a precomputed ``--corruption-root`` folder and never generated, and AlexNet has no
errors on them, so they get accuracies but no CE or mCE. :data:`CORRUPTIONS` stays what ellrobust can
generate.
This module imports nothing heavy: ``ellrobust attacks`` lists it, and ``imagecorruptions`` pulls in
OpenCV, numba and scikit-image, so that import waits until an image is actually corrupted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from ellrobust.core.errors import UsageError
from ellrobust.core.registry import Registry, unknown_choice


class CorruptionSet(StrEnum):
    """Which list a corruption belongs to: the 15 that define mCE, the 4 held-out extras, or ImageNet-3DCC's."""

    BENCHMARK = "benchmark"
    EXTRA = "extra"
    IMAGENET_3DCC = "3dcc"  # ImageNet-3DCC's 12, precomputed only (:data:`IMAGENET_3DCC`)


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Attributes:
        name: the ``imagecorruptions`` function name, also the ImageNet-C / CIFAR-10-C folder name
            (ImageNet-3DCC's: its folder name).
        group: noise, blur, weather, digital (benchmark) or extra; ImageNet-3DCC's as its authors group them.
        set: ``"benchmark"``, ``"extra"`` or ``"3dcc"`` (a :class:`CorruptionSet`: a str that prints as its value).
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

#: ImageNet-3DCC's 12 corruptions as (name, group, description), grouped as its authors group them.
_3DCC_ENTRIES = (
    ("near_focus", "depth of field", "near plane in focus, the rest blurred by depth"),
    ("far_focus", "depth of field", "far plane in focus, the rest blurred by depth"),
    ("fog_3d", "weather", "fog thickening with scene depth"),
    ("flash", "lighting", "camera flash falling off with depth"),
    ("color_quant", "noise", "colour quantisation to fewer levels"),
    ("low_light", "noise", "low-light capture: darker, with sensor noise"),
    ("xy_motion_blur", "camera motion", "blur of a camera moving in the image plane"),
    ("z_motion_blur", "camera motion", "blur of a camera moving along its axis"),
    ("iso_noise", "noise", "ISO sensor noise"),
    ("bit_error", "video", "bit errors in an H.265 stream"),
    ("h265_abr", "video", "H.265 compression at an average bit rate"),
    ("h265_crf", "video", "H.265 compression at a constant rate factor"),
)


def _3dcc_registry() -> Registry[Corruption]:
    registry: Registry[Corruption] = Registry("ImageNet-3DCC corruption")
    for name, group, description in _3DCC_ENTRIES:
        registry.add(name, Corruption(name, group, CorruptionSet.IMAGENET_3DCC, description))
    return registry


IMAGENET_3DCC: Registry[Corruption] = _3dcc_registry()

#: Names that stand for a whole set on the command line.
SET_ALIASES: dict[str, CorruptionSet] = {
    "all": CorruptionSet.BENCHMARK,
    "extra": CorruptionSet.EXTRA,
    "3dcc": CorruptionSet.IMAGENET_3DCC,
}


def every_corruption() -> Iterator[tuple[str, Corruption]]:
    """Every known corruption, generated (:data:`CORRUPTIONS`) then precomputed only (:data:`IMAGENET_3DCC`)."""
    yield from CORRUPTIONS.items()
    yield from IMAGENET_3DCC.items()


def find_corruption(name: str) -> Corruption:
    """The corruption of that name in either registry.

    Raises:
        UsageError: for an unknown name, with the closest known names (and the set aliases) as suggestions.
    """
    if name in IMAGENET_3DCC:
        return IMAGENET_3DCC.get(name)
    if name in CORRUPTIONS:
        return CORRUPTIONS.get(name)
    raise UsageError(unknown_choice("corruption", name, [n for n, _ in every_corruption()] + list(SET_ALIASES)))


def is_corruption(name: str) -> bool:
    """Whether ``name`` is a known corruption (a row's method is then a corruption's)."""
    return name in CORRUPTIONS or name in IMAGENET_3DCC


def names_in(corruption_set: CorruptionSet) -> tuple[str, ...]:
    """The registered names of one set, in benchmark order."""
    return tuple(name for name, c in every_corruption() if c.set == corruption_set)


def resolve_corruptions(requested: Iterable[str]) -> tuple[str, ...]:
    """Expand ``all`` / ``extra`` / ``3dcc`` and validate names; order kept, duplicates dropped.

    Raises:
        UsageError: for an unknown name, with the closest registered names as suggestions.
    """
    out: list[str] = []
    for name in requested:
        key = name.strip().lower()
        out.extend(names_in(SET_ALIASES[key]) if key in SET_ALIASES else (find_corruption(key).name,))
    return tuple(dict.fromkeys(out))
