"""Which corruption constants an image gets: ImageNet-C's, CIFAR-10-C's, or chosen by image size.

Hendrycks & Dietterich tuned each corruption's per-severity constants twice: once for 224 px ImageNet
images (``make_imagenet_c.py``, what ``imagecorruptions`` implements) and once for 32 px CIFAR-10
images (``make_cifar_c.py``, :mod:`ellrobust.corruptions.cifar10c`). The constants are in pixels, so
ImageNet-C's on a 32 px image are the wrong protocol: a zoom blur that barely moves a pixel, fog and
contrast that erase the image at severity 1. ``auto`` picks by size so that the default is right for
the embedded digits and CIFAR-10 as well as for ImageNet-sized folders.

The released files differ in how they were stored, and a protocol reproduces that too: make_imagenet_c.py
writes every corrupted image with PIL as a JPEG at quality 85 (``Image.fromarray(np.uint8(img)).save(path,
quality=85, optimize=True)``), so every released ImageNet-C image carries that compression on top of its
corruption; ``imagenet-c`` does the same round trip (:func:`ellrobust.corruptions.generate.jpeg_round_trip`).
``imagenet-c-raw`` skips it; its mCE is not comparable to
published ImageNet-C numbers.
make_cifar_c.py stores ``np.uint8`` arrays with ``np.save``: CIFAR-10-C has no compression to reproduce.
"""

from __future__ import annotations

from enum import StrEnum

from ellrobust.core.errors import UsageError


class CorruptionProtocol(StrEnum):
    """The corruption constants to use; ``auto`` is ``cifar-10-c`` or ``imagenet-c`` (:func:`resolve_protocol`)."""

    IMAGENET_C = "imagenet-c"
    CIFAR_10_C = "cifar-10-c"
    AUTO = "auto"
    IMAGENET_C_RAW = "imagenet-c-raw"  # ImageNet-C's constants without the released files' JPEG q85 round trip


#: ``auto`` uses CIFAR-10-C's constants for images whose larger side is under this many pixels.
AUTO_CIFAR_BELOW = 64


def resolve_protocol(protocol: CorruptionProtocol | str, image_size: int) -> CorruptionProtocol:
    """The concrete protocol for images of ``image_size`` px (their larger side): never ``auto``.

    Raises:
        UsageError: ``protocol`` is not one of :class:`CorruptionProtocol`'s values.
    """
    try:
        chosen = CorruptionProtocol(protocol)
    except ValueError:
        choices = ", ".join(p.value for p in CorruptionProtocol)
        raise UsageError(f"unknown corruption protocol {protocol!r}. Choices: {choices}.") from None
    if chosen is not CorruptionProtocol.AUTO:
        return chosen
    return CorruptionProtocol.CIFAR_10_C if image_size < AUTO_CIFAR_BELOW else CorruptionProtocol.IMAGENET_C
