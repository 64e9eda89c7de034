"""CIFAR-10-C corruptions: the 19 corruptions with the constants Hendrycks & Dietterich used for 32 px images.

Source: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019; the generator of CIFAR-10-C is ``ImageNet-C/create_c/make_cifar_c.py``
in https://github.com/hendrycks/robustness (Apache-2.0). This module re-implements its operations and
copies its per-severity constants; each constants table below names the line of that file it comes
from. ImageNet-C's constants (what ``imagecorruptions`` implements) are tuned for 224 px images and
are the wrong protocol on 32 px ones (see :mod:`ellrobust.corruptions.protocol`).

Faithfulness, and where it stops:

* Randomness: make_cifar_c draws from NumPy's global generator. Here every draw comes from a local
  ``np.random.RandomState(seed)`` in the same order, with the same calls, so an image corrupted with
  ``seed`` is the image make_cifar_c makes after ``np.random.seed(seed)``; the caller's global state is
  never touched. ``impulse_noise`` is scikit-image 0.13's ``random_noise(mode="s&p")`` (the version
  make_cifar_c pinned), which drew two ``np.random.choice`` masks from the global generator; current
  scikit-image draws from a generator of its own, so the two masks are drawn here as 0.13 drew them.
* Output: make_cifar_c stores ``np.uint8(corrupted)``: truncation, not rounding. So does :func:`corrupt`.
* ``motion_blur`` and the motion-blurred layer of ``snow`` used ImageMagick (Wand). They use the
  NumPy motion blur of the ``imagecorruptions`` fork instead (the one behind the ImageNet-C path), with
  CIFAR's radius, sigma and angle range, truncated to 8 bits as ImageMagick's PNG was (within one
  level of ImageMagick 6.9's output).
* ``frost`` uses the six frost photographs shipped inside ``imagecorruptions`` (byte-identical to the
  ones in hendrycks/robustness), shrunk to a fifth as make_cifar_c does; like make_cifar_c it draws
  among the first five only.
* ``glass_blur`` reproduces make_cifar_c's pixel "swap", which with NumPy views is a copy: each pixel
  takes its neighbour's value and the neighbour keeps its own.
* Libraries (OpenCV, SciPy, scikit-image, Pillow/libjpeg) are today's, not the 2018 versions
  make_cifar_c pinned (its requirements: NumPy 1.14, SciPy 1.0, scikit-image 0.13.1, OpenCV 3.4,
  Pillow 5.0); where their arithmetic changed since (resampling, interpolation at borders, the JPEG
  encoder), pixels may differ from the released CIFAR-10-C by a level or near the borders. ``spatter``
  filters its mud mask in float64, as scikit-image 0.13 did (today's keeps float32).

Checked once while writing this module (not a test: it needs make_cifar_c.py, scikit-image 0.13's
``random_noise`` and ImageMagick): with today's libraries and the same seed, make_cifar_c's own functions
and these agree bit for bit on 17 corruptions × 5 severities × 40 seeds × 4 images (``spatter`` once
its mud mask is float64 there too); ``motion_blur`` differs by one level in about 1 % of values and
``snow`` almost never.

Image size: make_cifar_c assumes 32×32. Every function here takes any H×W with sides from
:data:`MIN_SIDE` to :data:`MAX_SIDE` px and reduces to make_cifar_c exactly at 32×32: loops and crops
use H and W instead of 32, and ``fog``'s plasma map is the next power of two at least as large as the
larger side, cropped. The constants stay in pixels (``elastic_transform``'s are 32 × a fraction in
make_cifar_c, kept as such), as every other corruption's blur radii and zooms are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import cv2
import numpy as np
import skimage.color
from PIL import Image
from scipy.ndimage import map_coordinates
from skimage.filters import gaussian

from ellrobust.core.errors import UsageError
from ellrobust.core.registry import Registry
from ellrobust.corruptions.catalog import CORRUPTIONS
from ellrobust.corruptions.image_ops import (
    FROST_FILES,
    clipped_zoom,
    crop_origin,
    disk_kernel,
    frost_photographs,
    gaussian_filter,
    motion_blurred_8bit,
    plasma_fractal,
)

#: Smallest side accepted: half of CIFAR's 32 px, below which the 32 px constants swamp the image.
MIN_SIDE = 16
#: Largest side accepted: images of 64 px and more get ImageNet-C's constants (``auto``).
MAX_SIDE = 63

#: A corruption at one severity: (uint8 HWC RGB image, that severity's constants, random state) →
#: float image in [0, 255] (or uint8), before make_cifar_c's final truncation to uint8.
Apply = Callable[[np.ndarray, Any, np.random.RandomState], np.ndarray]


@dataclass(frozen=True)
class Parameterisation:
    """One corruption as make_cifar_c defines it.

    Attributes:
        name: the registered corruption name (:data:`ellrobust.corruptions.catalog.CORRUPTIONS`).
        constants: the constants of severities 1 to 5, as make_cifar_c lists them.
        source: where the constants are, ``make_cifar_c.py:<line>``.
        apply: the corruption at one severity (see :data:`Apply`).
    """

    name: str
    constants: tuple
    source: str
    apply: Apply


CIFAR_10_C: Registry[Parameterisation] = Registry("CIFAR-10-C corruption")


def _constants(name: str, line: int, constants: tuple) -> Callable[[Apply], Apply]:
    """Register the decorated function as ``name`` with its constants table from make_cifar_c's ``line``."""

    def register(apply: Apply) -> Apply:
        CIFAR_10_C.add(name, Parameterisation(name, constants, f"make_cifar_c.py:{line}", apply))
        return apply

    return register


def corrupt(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt one uint8 HWC RGB image with CIFAR-10-C's constants; same shape and dtype out.

    Deterministic in ``seed`` (an unsigned 32-bit integer), and NumPy's global random state is left
    as it was.

    Raises:
        UsageError: unknown corruption, severity outside 1-5, not a uint8 H×W×3 array, or a side
            outside :data:`MIN_SIDE`-:data:`MAX_SIDE` px.
    """
    spec = CIFAR_10_C.get(CORRUPTIONS.get(corruption).name)
    if severity not in range(1, len(spec.constants) + 1):
        raise UsageError(f"corruption severity must be 1 to {len(spec.constants)} (got {severity}).")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UsageError(f"CIFAR-10-C corruptions take uint8 H×W×3 RGB images (got {image.dtype} {image.shape}).")
    height, width = image.shape[:2]
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise UsageError(
            f"the cifar-10-c corruption protocol takes images of {MIN_SIDE} to {MAX_SIDE} px a side "
            f"(got {width}×{height}); use the imagenet-c protocol for larger images."
        )
    rng = np.random.RandomState(seed)
    return np.uint8(spec.apply(np.ascontiguousarray(image), spec.constants[severity - 1], rng))


# --- helpers (make_cifar_c.py lines 34-122) ----------------------------------------------------------


# --- noise ------------------------------------------------------------------------------------------


@_constants("gaussian_noise", 131, (0.04, 0.06, 0.08, 0.09, 0.10))
def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Additive Gaussian noise of standard deviation ``c`` (pixels in [0, 1])."""
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


@_constants("shot_noise", 138, (500, 250, 100, 75, 50))
def _shot_noise(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Poisson noise at ``c`` photons per unit intensity (fewer photons, more noise)."""
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


@_constants("impulse_noise", 145, (0.01, 0.02, 0.03, 0.05, 0.07))
def _impulse_noise(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Salt and pepper on a fraction ``c`` of the values (per channel), half each.

    scikit-image 0.13's ``random_noise(mode="s&p", amount=c)``: one mask of flipped values, one of
    salted ones, both ``np.random.choice`` draws in that order.
    """
    out = x / 255.0
    flipped = rng.choice([True, False], size=out.shape, p=[c, 1 - c])
    salted = rng.choice([True, False], size=out.shape, p=[0.5, 0.5])
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return np.clip(out, 0, 1) * 255


@_constants("speckle_noise", 152, (0.06, 0.1, 0.12, 0.16, 0.2))
def _speckle_noise(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Multiplicative Gaussian noise of standard deviation ``c``."""
    x = x / 255.0
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


# --- blur -------------------------------------------------------------------------------------------


@_constants("gaussian_blur", 159, (0.4, 0.6, 0.7, 0.8, 1))
def _gaussian_blur(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Gaussian blur of standard deviation ``c`` px."""
    return np.clip(gaussian_filter(x / 255.0, c), 0, 1) * 255


@_constants("glass_blur", 167, ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)))
def _glass_blur(x: np.ndarray, c: tuple[float, int, int], rng: np.random.RandomState) -> np.ndarray:
    """Blur (sigma), local pixel shuffling (max_delta, iterations), blur again.

    make_cifar_c visits the pixels h = H−d … d+1, w = W−d … d+1 (d = max_delta) in that order and,
    for each, draws ``dx, dy = randint(-d, d, size=2)`` and "swaps" pixel (h, w) with (h+dy, w+dx).
    With NumPy views the swap is a copy: (h, w) takes the neighbour's value, the neighbour keeps its
    own. With d = 1 (every CIFAR severity) the offsets are −1 or 0, so a pixel only ever reads a
    pixel the sweep has not yet written: one sweep equals a gather from the image before the sweep,
    done here at once, with the offsets of a sweep drawn in one call (the same draws, in the same
    order, as make_cifar_c's per-pixel calls).
    """
    sigma, max_delta, iterations = c
    x = np.uint8(gaussian_filter(x / 255.0, sigma) * 255)
    height, width = x.shape[:2]
    rows = np.arange(height - max_delta, max_delta, -1)[:, None]
    cols = np.arange(width - max_delta, max_delta, -1)[None, :]
    for _ in range(iterations):
        offsets = rng.randint(-max_delta, max_delta, size=(rows.size, cols.size, 2))
        x[rows, cols] = x[rows + offsets[..., 1], cols + offsets[..., 0]]
    return np.clip(gaussian_filter(x / 255.0, sigma), 0, 1) * 255


@_constants("defocus_blur", 184, ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)))
def _defocus_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.RandomState) -> np.ndarray:
    """Each channel filtered with an anti-aliased disk (radius, alias_blur)."""
    x = x / 255.0
    kernel = disk_kernel(radius=c[0], alias_blur=c[1])
    channels = np.array([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]).transpose((1, 2, 0))
    return np.clip(channels, 0, 1) * 255


@_constants("motion_blur", 198, ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)))
def _motion_blur_corruption(x: np.ndarray, c: tuple[float, float], rng: np.random.RandomState) -> np.ndarray:
    """Motion blur (radius, sigma) at an angle drawn uniformly from [−45°, 45°)."""
    return motion_blurred_8bit(x, radius=c[0], sigma=c[1], angle=rng.uniform(-45, 45))


@_constants(
    "zoom_blur",
    216,
    # Float rounding makes the first two ranges include their stop: 7, 12, 16, 21 and 26 factors.
    (
        np.arange(1, 1.06, 0.01),
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.01),
        np.arange(1, 1.26, 0.01),
    ),
)
def _zoom_blur(x: np.ndarray, c: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """The image averaged with its centre zoomed by each factor of ``c``."""
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += clipped_zoom(x, zoom_factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


# --- weather ----------------------------------------------------------------------------------------


@_constants(
    "snow",
    251,
    (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
)
def _snow(x: np.ndarray, c: tuple, rng: np.random.RandomState) -> np.ndarray:
    """Snow: a thresholded Gaussian layer (loc, scale, zoom, threshold), motion-blurred (radius, sigma)
    at an angle in [−135°, −45°), added twice (as is and rotated by 180°) to the image whitened towards
    1.5 × grey + 0.5 (blend weight c[6])."""
    x = x.astype(np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)
    layer = motion_blurred_8bit(layer, radius=c[4], sigma=c[5], angle=rng.uniform(-135, -45)) / 255.0
    layer = layer[..., np.newaxis]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


@_constants("frost", 238, ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)))
def _frost(x: np.ndarray, c: tuple[float, float], rng: np.random.RandomState) -> np.ndarray:
    """``c[0]`` × image + ``c[1]`` × a random crop of a random frost photograph."""
    photo = frost_photographs()[rng.randint(len(FROST_FILES))]
    height, width = x.shape[:2]
    top = crop_origin(photo.shape[0] - height, rng)
    left = crop_origin(photo.shape[1] - width, rng)
    frost = photo[top : top + height, left : left + width][..., [2, 1, 0]]
    return np.clip(c[0] * x + c[1] * frost, 0, 255)


@_constants("fog", 229, ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)))
def _fog(x: np.ndarray, c: tuple[float, float], rng: np.random.RandomState) -> np.ndarray:
    """A plasma fractal (roughness: wibble decay c[1]) of strength c[0] added, then rescaled."""
    x = x / 255.0
    max_val = x.max()
    height, width = x.shape[:2]
    mapsize = 1 << (max(height, width) - 1).bit_length()
    x += c[0] * plasma_fractal(mapsize, c[1], rng)[:height, :width][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


@_constants("brightness", 342, (0.05, 0.1, 0.15, 0.2, 0.3))
def _brightness(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """HSV value raised by ``c``."""
    x = skimage.color.rgb2hsv(x / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255


# --- digital ----------------------------------------------------------------------------------------


@_constants("contrast", 334, (0.75, 0.5, 0.4, 0.3, 0.15))
def _contrast(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Each channel pulled towards its mean: deviations scaled by ``c``."""
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


@_constants(
    "elastic_transform",
    385,
    (
        (32 * 0, 32 * 0, 32 * 0.08),
        (32 * 0.05, 32 * 0.2, 32 * 0.07),
        (32 * 0.08, 32 * 0.06, 32 * 0.06),
        (32 * 0.1, 32 * 0.04, 32 * 0.05),
        (32 * 0.1, 32 * 0.03, 32 * 0.03),
    ),
)
def _elastic_transform(image: np.ndarray, c: tuple[float, float, float], rng: np.random.RandomState) -> np.ndarray:
    """A random affine warp (corners moved by up to c[2] px), then a smooth random displacement field
    (amplitude c[0] px, smoothness sigma c[1] px), bilinear, reflected at the borders."""
    image = np.array(image, dtype=np.float32) / 255.0
    shape = image.shape
    shape_size = shape[:2]

    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32(
        [
            center_square + square_size,
            [center_square[0] + square_size, center_square[1] - square_size],
            center_square - square_size,
        ]
    )
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    affine = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, affine, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)

    dx = (gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]

    cols, rows, chans = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    coordinates = np.array([(rows + dy).ravel(), (cols + dx).ravel(), chans.ravel()])
    return np.clip(map_coordinates(image, coordinates, order=1, mode="reflect").reshape(shape), 0, 1) * 255


@_constants("pixelate", 374, (0.95, 0.9, 0.85, 0.75, 0.65))
def _pixelate(x: np.ndarray, c: float, rng: np.random.RandomState) -> np.ndarray:
    """Box down-sampling to ``c`` of the size, box up-sampling back (CIFAR's, not ImageNet-C's nearest)."""
    height, width = x.shape[:2]
    small = Image.fromarray(x).resize((int(width * c), int(height * c)), Image.Resampling.BOX)
    return np.asarray(small.resize((width, height), Image.Resampling.BOX))


@_constants("jpeg_compression", 364, (80, 65, 58, 50, 40))
def _jpeg_compression(x: np.ndarray, c: int, rng: np.random.RandomState) -> np.ndarray:
    """JPEG at quality ``c``."""
    output = BytesIO()
    Image.fromarray(x).save(output, "JPEG", quality=c)
    return np.asarray(Image.open(output))


# --- extra ------------------------------------------------------------------------------------------


#: make_cifar_c.py:308 and 323: water is pale turquoise, mud brown (channel order of the image).
WATER = np.float32((175 / 255.0, 238 / 255.0, 238 / 255.0))
MUD = np.float32((63 / 255.0, 42 / 255.0, 20 / 255.0))


@_constants(
    "spatter",
    279,
    (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
)
def _spatter(x: np.ndarray, c: tuple, rng: np.random.RandomState) -> np.ndarray:
    """A thresholded, smoothed Gaussian "liquid" layer (loc, scale, sigma, threshold): shaded water
    (strength c[4]) when c[5] is 0, opaque mud (mask smoothed by sigma c[4]) when it is 1.

    make_cifar_c adds and later drops an alpha channel (BGRA) around the water; only the three colour
    channels reach the output, so they are all that is computed. When the layer is empty (no value
    above the threshold) make_cifar_c divides 0 by 0 and stores NaN cast to uint8; here the image is
    then left without water.
    """
    x = x.astype(np.float32) / 255.0
    liquid = gaussian(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]), sigma=c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        liquid = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        shade = liquid * dist
        peak = shade.max()
        water = np.divide(shade, peak, out=np.zeros_like(shade), where=peak > 0) * c[4]
        return np.clip(x + water[..., np.newaxis] * WATER, 0, 1) * 255
    # scikit-image 0.13 filtered this float32 mask in float64, as done here.
    mask = gaussian(np.where(liquid > c[3], 1.0, 0.0), sigma=c[4])
    mask[mask < 0.8] = 0
    mask = mask[..., np.newaxis]
    color = (np.broadcast_to(MUD, x.shape) * mask).astype(np.float32)
    x *= 1 - mask
    return np.clip(x + color, 0, 1) * 255


@_constants("saturate", 353, ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)))
def _saturate(x: np.ndarray, c: tuple[float, float], rng: np.random.RandomState) -> np.ndarray:
    """HSV saturation scaled by c[0] and shifted by c[1]."""
    x = skimage.color.rgb2hsv(x / 255.0)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255
