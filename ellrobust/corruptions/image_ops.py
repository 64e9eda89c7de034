"""Image operations the CIFAR-10-C corruptions are built from, as Hendrycks & Dietterich wrote them:
blurs, the plasma fractal, the clipped zoom, motion blur, and the frost photographs."""

from __future__ import annotations

import functools
import importlib.resources

import cv2
import numpy as np
from imagecorruptions.corruptions import _motion_blur
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian


def gaussian_filter(image: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's Gaussian filter of an H×W×C image, channels filtered separately."""
    return gaussian(image, sigma=sigma, channel_axis=-1)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """A normalised disk on a 17×17 grid, anti-aliased by a 3×3 Gaussian (make_cifar_c.py:34).

    make_cifar_c switches to a larger grid for radii above 8; CIFAR's radii are at most 1.5.
    """
    grid = np.arange(-8, 8 + 1)
    xs, ys = np.meshgrid(grid, grid)
    aliased = np.array((xs**2 + ys**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=(3, 3), sigmaX=alias_blur)


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.RandomState) -> np.ndarray:
    """A diamond-square height map in [0, 1], ``mapsize`` (a power of two) a side (make_cifar_c.py:63)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)

        centres = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        left_sum = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(left_sum)
        top_sum = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(top_sum)

        stepsize //= 2
        wibble /= wibbledecay

    maparray -= maparray.min()
    return maparray / maparray.max()


def clipped_zoom(image: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Zoom into the centre of an H×W×C array, keeping H×W (make_cifar_c.py:112, per axis for H ≠ W)."""
    height, width = image.shape[:2]
    crop_h, crop_w = int(np.ceil(height / zoom_factor)), int(np.ceil(width / zoom_factor))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    zoomed = scizoom(image[top : top + crop_h, left : left + crop_w], (zoom_factor, zoom_factor, 1), order=1)
    trim_top, trim_left = (zoomed.shape[0] - height) // 2, (zoomed.shape[1] - width) // 2
    return zoomed[trim_top : trim_top + height, trim_left : trim_left + width]


def motion_blurred_8bit(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur as the imagecorruptions fork computes it, truncated to uint8.

    make_cifar_c read ImageMagick's result back as an 8-bit PNG. Truncating the fork's float result
    matches ImageMagick 6.9 (Debian 12) to within one level, 0.01-0.08 levels on average, at CIFAR's
    five settings; rounding would be half a level brighter on average.
    """
    return np.clip(_motion_blur(image, radius=radius, sigma=sigma, angle=angle), 0, 255).astype(np.uint8)


#: make_cifar_c.py:240: the photographs it reads; ``randint(5)`` never picks a sixth (frost6.jpg).
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


#: make_cifar_c.py:242: the photographs are shrunk to a fifth before a crop is taken.
FROST_SCALE = 0.2


@functools.cache
def frost_photographs() -> tuple[np.ndarray, ...]:
    """The shrunk frost photographs (BGR, as OpenCV reads them), read once per process."""
    folder = importlib.resources.files("imagecorruptions") / "frost"
    photos = []
    for name in FROST_FILES:
        with importlib.resources.as_file(folder / name) as path:
            photo = cv2.resize(cv2.imread(str(path)), (0, 0), fx=FROST_SCALE, fy=FROST_SCALE)
        photo.setflags(write=False)
        photos.append(photo)
    return tuple(photos)


def crop_origin(span: int, rng: np.random.RandomState) -> int:
    """make_cifar_c's ``randint(0, span)``; 0 without a draw when the crop fills the photograph (span 0,
    a 63 px side on the 63 px high photographs, which make_cifar_c's 32 px images never meet)."""
    return rng.randint(0, span) if span > 0 else 0
