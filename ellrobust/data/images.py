"""Decoding image files: :func:`read_rgb` and the decompression-bomb limit it enforces.

One decoder for every file ellrobust reads (image folders, ImageNet-C files), so the clean and the
corrupted images follow the same rules and fail with the same one-line errors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from ellrobust.core.errors import UsageError


@contextlib.contextmanager
def image_pixel_limit(pixels: int | None) -> Iterator[None]:
    """``--max-image-pixels``: Pillow's decompression-bomb limit while the block runs (None: keep Pillow's).

    Pillow keeps the limit in a module global, ``PIL.Image.MAX_IMAGE_PIXELS``; set before the run's
    worker pool forks, the workers inherit it. It is restored afterwards, so a library caller (or a
    test) running several evaluations in one process is not left with another limit.
    """
    from PIL import Image

    if pixels is not None and pixels <= 0:
        raise UsageError(f"--max-image-pixels must be a positive number of pixels (got {pixels}).")
    before = Image.MAX_IMAGE_PIXELS
    if pixels is not None:
        Image.MAX_IMAGE_PIXELS = pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def read_rgb(path: str | os.PathLike):
    """Decode an image file to an 8-bit RGB PIL image, or raise a one-line :class:`UsageError` naming it.

    Every decoding error (unreadable, truncated, not an image whatever its extension, a mode Pillow
    cannot convert) is that one line, since hostile or damaged files are input, not bugs. Decisions
    (README, "Images"), all made to give the pixels that torchvision's ``ImageFolder`` gives, which is
    what published ImageNet accuracies were measured on, except where that would be garbage:

    * **Size**: an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (``--max-image-pixels``,
      Pillow's 89 478 485 by default) is refused before it is decoded: a decompression bomb (a few
      kB of PNG that decodes to gigabytes) would otherwise take the memory of every worker. Pillow
      itself only warns up to twice its limit; here the limit is the limit.
    * **EXIF orientation is not applied**: torchvision and timm do not apply it, and ImageNet's labels
      and published numbers are on the stored pixels.
    * **Transparency is dropped** (RGBA, LA, palette images with transparency): the colour channels
      are kept as stored, as torchvision's ``convert("RGB")`` does (without Pillow's warning).
    * **16-bit greyscale** (PNG ``I;16``, PGM ``I``) keeps its high byte, as Pillow does for 16-bit
      RGB; torchvision's conversion would clip every value above 255 to white. Wider or float pixels
      (``I`` beyond 16 bits, ``F``) have no agreed 8-bit scale and are refused.
    """
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)
            with Image.open(path) as image:
                image.load()
                return _to_rgb(image, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = Image.MAX_IMAGE_PIXELS
        raise UsageError(
            f"image {str(path)!r} has more than {limit:,} pixels, the limit against decompression bombs; "
            "if it is a genuine large image, raise the limit with --max-image-pixels N, else remove it."
        ) from None
    except UsageError:
        raise
    except Exception as exc:  # whatever Pillow raises on hostile data is the file's fault, not a bug
        detail = " ".join(str(exc).split())
        raise UsageError(
            f"image {str(path)!r} cannot be read ({type(exc).__name__}{': ' + detail if detail else ''}); "
            "replace or remove it, then re-run (finished units are kept)."
        ) from None


def _to_rgb(image, path: str | os.PathLike):
    """8-bit RGB of a decoded image, by the rules of :func:`read_rgb`."""
    from PIL import Image

    if image.mode.startswith("I"):
        pixels = np.asarray(image)
        if pixels.size and (int(pixels.min()) < 0 or int(pixels.max()) > 0xFFFF):
            raise UsageError(
                f"image {str(path)!r} has pixel values beyond 16 bits (mode {image.mode}); "
                "convert it to 8 or 16 bits per channel."
            )
        image = Image.fromarray((pixels.astype(np.uint16) >> 8).astype(np.uint8), "L")
    elif image.mode == "F":
        raise UsageError(
            f"image {str(path)!r} has floating-point pixels (mode F), which have no agreed 8-bit scale; "
            "convert it to 8 bits per channel."
        )
    return image.convert("RGB")
