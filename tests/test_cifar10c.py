"""CIFAR-10-C corruptions: make_cifar_c.py's constants, re-computed here by hand, and the protocol choice.

The constants below are typed from hendrycks/robustness ``ImageNet-C/create_c/make_cifar_c.py``, not
read from :mod:`ellrobust.corruptions.cifar10c`, so a wrong table there fails here. Corruptions whose
randomness is a few draws (noise, glass blur's offsets, frost's photograph and crop, motion blur's
angle, elastic severity 1's affine) are re-computed from the same ``RandomState(seed)`` draws; the
random fields (fog, snow, spatter, the elastic displacement) are held to properties of their formula.
"""

from __future__ import annotations

import importlib.resources
from itertools import pairwise

import cv2
import numpy as np
import pytest
from imagecorruptions.corruptions import _motion_blur
from PIL import Image
from scipy import ndimage

from ellrobust.core.errors import UsageError
from ellrobust.corruptions import CORRUPTIONS
from ellrobust.corruptions.cifar10c import CIFAR_10_C, MAX_SIDE, MIN_SIDE, corrupt
from ellrobust.corruptions.generate import corrupt_image
from ellrobust.corruptions.protocol import CorruptionProtocol, resolve_protocol

SEVERITIES = (1, 2, 3, 4, 5)
SEED = 20240611
NAMES = tuple(CORRUPTIONS.names())

#: Corruptions that draw nothing: the seed must not matter.
DETERMINISTIC = frozenset(
    {"gaussian_blur", "defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression", "saturate"}
)
#: Mean absolute change grows with severity. Not listed: frost (image weight falls while frost weight
#: rises), glass blur (severity 4 blurs less than 3 but shuffles twice), snow, spatter (water, then mud),
#: elastic (severity 1 is a pure affine warp), saturate (severities 1-2 desaturate, 3-5 saturate).
MONOTONE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "fog",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
)


def by_severity(constants: tuple) -> list[tuple]:
    """``(severity, constant)`` pairs for ``parametrize``."""
    return list(zip(SEVERITIES, constants, strict=True))


def make_image(height: int = 32, width: int = 32, seed: int = 2024) -> np.ndarray:
    """A smooth random colour image with a little noise: blurs, pixelation and JPEG all act on it."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 4, width // 4, 3))
    smooth = ndimage.zoom(coarse, (height / coarse.shape[0], width / coarse.shape[1], 1), order=1)
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_image()


def levels(value: np.ndarray) -> np.ndarray:
    """make_cifar_c's storage: ``np.uint8`` of a float image in [0, 255] (truncation)."""
    return np.uint8(value)


def assert_close(actual: np.ndarray, expected: np.ndarray, tolerance: int = 0) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.uint8
    difference = np.abs(actual.astype(int) - expected.astype(int))
    assert difference.max() <= tolerance, f"{int((difference > tolerance).sum())} values off, up to {difference.max()}"


# --- the table ---------------------------------------------------------------------------------------


def test_every_registered_corruption_has_five_cifar_severities_and_a_source_line():
    assert sorted(CIFAR_10_C.names()) == sorted(NAMES)
    for name, spec in CIFAR_10_C.items():
        assert spec.name == name and len(spec.constants) == len(SEVERITIES)
        assert spec.source.startswith("make_cifar_c.py:") and int(spec.source.split(":")[1]) > 0


# --- deterministic corruptions, by hand ----------------------------------------------------------------


@pytest.mark.parametrize("severity, c", by_severity((0.75, 0.5, 0.4, 0.3, 0.15)))
def test_contrast(image, severity, c):
    x = image / 255.0
    means = x.mean(axis=(0, 1))
    assert_close(corrupt(image, "contrast", severity, SEED), levels(np.clip((x - means) * c + means, 0, 1) * 255))


@pytest.mark.parametrize("severity, c", by_severity((0.05, 0.1, 0.15, 0.2, 0.3)))
def test_brightness_raises_the_hsv_value(image, severity, c):
    # HSV value V = max channel; raising it keeps hue and saturation, i.e. scales RGB by V'/V.
    x = image / 255.0
    value = x.max(axis=2, keepdims=True)
    raised = np.minimum(value + c, 1)
    expected = np.where(value > 0, x * raised / np.where(value > 0, value, 1), raised)
    assert_close(corrupt(image, "brightness", severity, SEED), levels(expected * 255), tolerance=1)


@pytest.mark.parametrize("severity, c", by_severity(((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))))
def test_saturate_scales_and_shifts_the_hsv_saturation(image, severity, c):
    # With V fixed, each channel is V - (V - channel) * S'/S; a grey pixel (S = 0) has hue 0: (V, V(1-S'), V(1-S')).
    x = image / 255.0
    value = x.max(axis=2, keepdims=True)
    chroma = value - x.min(axis=2, keepdims=True)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1), 0)
    new = np.clip(saturation * c[0] + c[1], 0, 1)
    coloured = value - (value - x) * new / np.where(saturation > 0, saturation, 1)
    grey = np.concatenate([value, value * (1 - new), value * (1 - new)], axis=2)
    expected = np.where(saturation > 0, coloured, grey)
    assert_close(corrupt(image, "saturate", severity, SEED), levels(np.clip(expected, 0, 1) * 255), tolerance=1)


@pytest.mark.parametrize("severity, side", by_severity((30, 28, 27, 24, 20)))
def test_pixelate_box_down_and_box_up(image, severity, side):
    # int(32 * c) for c = 0.95, 0.9, 0.85, 0.75, 0.65; CIFAR-10-C up-samples with BOX, ImageNet-C with NEAREST.
    small = Image.fromarray(image).resize((side, side), Image.Resampling.BOX)
    expected = np.asarray(small.resize((32, 32), Image.Resampling.BOX))
    assert_close(corrupt(image, "pixelate", severity, SEED), expected)


@pytest.mark.parametrize("severity, quality", by_severity((80, 65, 58, 50, 40)))
def test_jpeg_compression(image, severity, quality, tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(image).save(path, quality=quality)
    assert_close(corrupt(image, "jpeg_compression", severity, SEED), np.asarray(Image.open(path)))


@pytest.mark.parametrize("severity, sigma", by_severity((0.4, 0.6, 0.7, 0.8, 1.0)))
def test_gaussian_blur(image, severity, sigma):
    blurred = ndimage.gaussian_filter(image / 255.0, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)
    assert_close(corrupt(image, "gaussian_blur", severity, SEED), levels(np.clip(blurred, 0, 1) * 255))


@pytest.mark.parametrize(
    "severity, radius, alias_blur", [(1, 0.3, 0.4), (2, 0.4, 0.5), (3, 0.5, 0.6), (4, 1, 0.2), (5, 1.5, 0.1)]
)
def test_defocus_blur_is_an_antialiased_disk(image, severity, radius, alias_blur):
    grid = np.arange(-8, 9)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).astype(float)
    disk /= disk.sum()
    taps = np.exp(-(np.array([-1.0, 0.0, 1.0]) ** 2) / (2 * alias_blur**2))
    taps /= taps.sum()
    kernel = ndimage.correlate(disk, np.outer(taps, taps), mode="mirror")  # OpenCV's default border
    blurred = np.stack([ndimage.correlate(image[..., d] / 255.0, kernel, mode="mirror") for d in range(3)], axis=2)
    assert_close(corrupt(image, "defocus_blur", severity, SEED), levels(np.clip(blurred, 0, 1) * 255), tolerance=1)


@pytest.mark.parametrize(
    "severity, stop, n_factors", [(1, 1.06, 7), (2, 1.11, 12), (3, 1.16, 16), (4, 1.21, 21), (5, 1.26, 26)]
)
def test_zoom_blur_averages_centre_zooms_in_steps_of_one_percent(image, severity, stop, n_factors):
    # np.arange(1, stop, 0.01) as make_cifar_c writes it: float rounding puts 1.06 and 1.11 in their ranges.
    # The factors must be arange's own: 1 + 0.01 * k differs in the last bit, and 26 px zoomed by 1.25
    # is exactly 32.5 px, where that bit decides the zoomed size.
    factors = np.arange(1, stop, 0.01)
    assert len(factors) == n_factors
    x = (image / 255.0).astype(np.float32)
    zooms = np.zeros_like(x)
    for zoom in factors:
        crop = int(np.ceil(32 / zoom))
        top = (32 - crop) // 2
        zoomed = ndimage.zoom(x[top : top + crop, top : top + crop], (zoom, zoom, 1), order=1)
        trim = (zoomed.shape[0] - 32) // 2
        zooms += zoomed[trim : trim + 32, trim : trim + 32]
    expected = levels(np.clip((x + zooms) / (n_factors + 1), 0, 1) * 255)
    assert_close(corrupt(image, "zoom_blur", severity, SEED), expected)


# --- a few draws: re-computed from the same RandomState ----------------------------------------------


@pytest.mark.parametrize("severity, c", by_severity((0.04, 0.06, 0.08, 0.09, 0.10)))
def test_gaussian_noise(image, severity, c):
    noise = np.random.RandomState(SEED).normal(0, c, image.shape)
    assert_close(corrupt(image, "gaussian_noise", severity, SEED), levels(np.clip(image / 255 + noise, 0, 1) * 255))


@pytest.mark.parametrize("severity, photons", by_severity((500, 250, 100, 75, 50)))
def test_shot_noise(image, severity, photons):
    counts = np.random.RandomState(SEED).poisson(image / 255 * photons)
    assert_close(corrupt(image, "shot_noise", severity, SEED), levels(np.clip(counts / photons, 0, 1) * 255))


@pytest.mark.parametrize("severity, c", by_severity((0.06, 0.1, 0.12, 0.16, 0.2)))
def test_speckle_noise(image, severity, c):
    x = image / 255
    noise = np.random.RandomState(SEED).normal(0, c, image.shape)
    assert_close(corrupt(image, "speckle_noise", severity, SEED), levels(np.clip(x + x * noise, 0, 1) * 255))


@pytest.mark.parametrize("severity, amount", by_severity((0.01, 0.02, 0.03, 0.05, 0.07)))
def test_impulse_noise_is_scikit_image_013_salt_and_pepper(image, severity, amount):
    # random_noise(mode="s&p") of scikit-image 0.13: np.random.choice([True, False], p=[p, 1 - p]) picks
    # True exactly when its uniform draw is below p; first the flipped mask, then the salted one.
    rng = np.random.RandomState(SEED)
    flipped = rng.random_sample(image.shape) < amount
    salted = rng.random_sample(image.shape) < 0.5
    expected = np.where(flipped, np.where(salted, 255, 0), image).astype(np.uint8)
    out = corrupt(image, "impulse_noise", severity, SEED)
    assert_close(out, expected)
    assert 0.5 * amount < (out != image).mean() < 1.5 * amount


@pytest.mark.parametrize(
    "severity, sigma, iterations", [(1, 0.05, 1), (2, 0.25, 1), (3, 0.4, 1), (4, 0.25, 2), (5, 0.4, 2)]
)
def test_glass_blur_follows_make_cifar_c_pixel_by_pixel(image, severity, sigma, iterations):
    """make_cifar_c's loop, literally: the tuple "swap" of NumPy views copies the neighbour into the pixel."""

    def blur(x):
        return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)

    rng = np.random.RandomState(SEED)
    x = np.uint8(blur(image / 255.0) * 255)
    for _ in range(iterations):
        for h in range(31, 1, -1):
            for w in range(31, 1, -1):
                dx, dy = rng.randint(-1, 1, size=(2,))
                x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]
    expected = levels(np.clip(blur(x / 255.0), 0, 1) * 255)
    assert_close(corrupt(image, "glass_blur", severity, SEED), expected)


@pytest.mark.parametrize("severity, c", by_severity(((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))))
def test_frost_blends_a_crop_of_one_of_the_first_five_photographs(image, severity, c):
    rng = np.random.RandomState(SEED)
    name = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")[rng.randint(5)]
    with importlib.resources.as_file(importlib.resources.files("imagecorruptions") / "frost" / name) as path:
        photo = cv2.resize(cv2.imread(str(path)), (0, 0), fx=0.2, fy=0.2)
    top, left = rng.randint(0, photo.shape[0] - 32), rng.randint(0, photo.shape[1] - 32)
    frost = photo[top : top + 32, left : left + 32, ::-1]
    assert_close(corrupt(image, "frost", severity, SEED), levels(np.clip(c[0] * image + c[1] * frost, 0, 255)))


@pytest.mark.parametrize("severity, radius, sigma", [(1, 6, 1), (2, 6, 1.5), (3, 6, 2), (4, 8, 2), (5, 9, 2.5)])
def test_motion_blur_is_the_forks_blur_at_cifar_settings(image, severity, radius, sigma):
    angle = np.random.RandomState(SEED).uniform(-45, 45)
    expected = levels(np.clip(_motion_blur(image, radius=radius, sigma=sigma, angle=angle), 0, 255))
    assert_close(corrupt(image, "motion_blur", severity, SEED), expected)


def test_elastic_severity_1_is_a_pure_affine_warp_of_up_to_2_56_px(image):
    # (32*0, 32*0, 32*0.08): no displacement field, corners of the affine moved by up to 2.56 px.
    rng = np.random.RandomState(SEED)
    corners = np.float32([[26, 26], [26, 6], [6, 6]])  # centre 16 ± 32 // 3
    moved = corners + rng.uniform(-2.56, 2.56, size=(3, 2)).astype(np.float32)
    warp = cv2.getAffineTransform(corners, moved)
    warped = cv2.warpAffine(image.astype(np.float32) / 255.0, warp, (32, 32), borderMode=cv2.BORDER_REFLECT_101)
    assert_close(corrupt(image, "elastic_transform", 1, SEED), levels(np.clip(warped, 0, 1) * 255))


# --- random fields: properties of the formula ---------------------------------------------------------


@pytest.mark.parametrize("severity", SEVERITIES)
def test_elastic_output_is_interpolated_from_the_image(image, severity):
    """Affine warp and displacement are bilinear with reflected borders: no value outside the channel's range."""
    out = corrupt(image, "elastic_transform", severity, SEED).astype(int)
    low, high = image.min(axis=(0, 1)).astype(int), image.max(axis=(0, 1)).astype(int)
    assert ((out >= low - 1) & (out <= high)).all()
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("severity, strength", by_severity((0.2, 0.5, 0.75, 1, 1.5)))
def test_fog_adds_one_normalised_plasma_map_to_every_channel(image, severity, strength):
    """y = (x + c·p)·M/(M + c) with p in [0, 1] spanning the whole range and shared by the channels."""
    x = image / 255.0
    top = x.max()
    out = corrupt(image, "fog", severity, SEED) / 255.0
    plasma = (out * (top + strength) / top - x) / strength
    tolerance = (top + strength) / (top * strength * 255) + 1e-9  # one level, seen through the rescaling
    assert np.ptp(plasma, axis=2).max() <= tolerance
    assert -tolerance <= plasma.min() <= tolerance and 1 - tolerance <= plasma.max() <= 1 + 1e-9


@pytest.mark.parametrize("severity, blend", by_severity((0.95, 0.9, 0.9, 0.85, 0.8)))
def test_snow_brightens_with_one_grey_layer_symmetric_under_half_turn(image, severity, blend):
    x = image.astype(np.float32) / 255.0
    grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]
    base = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    out = corrupt(image, "snow", severity, SEED)
    assert (out.astype(int) >= np.floor(np.minimum(base, 1) * 255).astype(int) - 1).all()
    snowfall = out / 255.0 - base
    free = (out < 255).all(axis=2)  # pixels where no channel is clipped
    assert np.ptp(snowfall, axis=2)[free].max() <= 2 / 255
    layer = snowfall.mean(axis=2)
    both = free & np.rot90(free, 2)
    assert np.abs(layer - np.rot90(layer, 2))[both].max() <= 2 / 255
    assert layer[free].max() > 2 / 255  # it does snow


@pytest.mark.parametrize("severity", (1, 2, 3))
def test_spatter_water_only_adds_pale_turquoise(image, severity):
    out = corrupt(image, "spatter", severity, SEED).astype(int)
    added = out - image
    assert (added >= -1).all() and (added > 1).any()
    free = (out < 255).all(axis=2)
    assert np.abs(added[..., 1] - added[..., 2])[free].max() <= 1
    assert np.abs(added[..., 0] - added[..., 1] * 175 / 238)[free].max() <= 2


@pytest.mark.parametrize("severity", (4, 5))
def test_spatter_mud_is_at_least_80_percent_opaque_brown(image, severity):
    out = corrupt(image, "spatter", severity, SEED).astype(float)
    mud = np.array([63.0, 42.0, 20.0])
    changed = (np.abs(out - image) > 1).any(axis=2)
    assert changed.any()
    assert (np.abs(out - mud) <= 0.2 * np.abs(image - mud) + 1)[changed].all()


# --- every corruption × severity -----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_in_the_seed_and_shape_kept(image, name):
    for severity in SEVERITIES:
        out = corrupt(image, name, severity, SEED)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(image, name, severity, SEED))
        assert np.array_equal(out, corrupt(image, name, severity, SEED + 1)) == (name in DETERMINISTIC)


@pytest.mark.parametrize("shape", [(28, 40), (40, 28), (MIN_SIDE, MIN_SIDE), (MAX_SIDE, MAX_SIDE), (33, 57)])
def test_other_small_sizes_keep_their_shape(shape):
    image = make_image(*shape)
    for name in NAMES:
        for severity in SEVERITIES:
            out = corrupt(image, name, severity, SEED)
            assert out.shape == image.shape and out.dtype == np.uint8, (name, severity)


@pytest.mark.parametrize("name", MONOTONE)
def test_change_grows_with_severity(image, name):
    change = [np.abs(corrupt(image, name, s, SEED).astype(int) - image).mean() for s in SEVERITIES]
    # motion blur's severities 3 and 4 differ in a radius (6 → 8 px) beyond its sigma's (2 px) reach
    assert all(b >= a - 0.05 for a, b in pairwise(change)), change
    assert change[-1] > change[0] + 1


def test_global_numpy_random_state_is_left_alone(image):
    np.random.seed(7)
    before = np.random.get_state(legacy=False)
    for name in NAMES:
        corrupt(image, name, 3, SEED)
    after = np.random.get_state(legacy=False)
    assert (
        np.array_equal(before["state"]["key"], after["state"]["key"])
        and before["state"]["pos"] == after["state"]["pos"]
    )


def test_the_input_is_not_modified(image):
    copy = image.copy()
    for name in NAMES:
        corrupt(image, name, 5, SEED)
    assert np.array_equal(image, copy)


@pytest.mark.parametrize(
    "image, severity, message",
    [
        (np.zeros((15, 32, 3), np.uint8), 1, "16 to 63 px"),
        (np.zeros((32, 64, 3), np.uint8), 1, "imagenet-c"),
        (np.zeros((32, 32, 3), np.uint8), 6, "severity"),
        (np.zeros((32, 32, 3), np.float32), 1, "uint8"),
        (np.zeros((32, 32), np.uint8), 1, "H×W×3"),
    ],
)
def test_bad_input_is_one_line(image, severity, message):
    with pytest.raises(UsageError, match=message) as caught:
        corrupt(image, "fog", severity, SEED)
    assert "\n" not in str(caught.value)


def test_unknown_corruption_suggests_names(image):
    with pytest.raises(UsageError, match="zoom_blur"):
        corrupt(image, "zoom_blurr", 1, SEED)


# --- protocol --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol, size, expected",
    [
        ("auto", 28, CorruptionProtocol.CIFAR_10_C),
        ("auto", 32, CorruptionProtocol.CIFAR_10_C),
        ("auto", 63, CorruptionProtocol.CIFAR_10_C),
        ("auto", 64, CorruptionProtocol.IMAGENET_C),
        (CorruptionProtocol.AUTO, 224, CorruptionProtocol.IMAGENET_C),
        ("imagenet-c", 32, CorruptionProtocol.IMAGENET_C),
        (CorruptionProtocol.CIFAR_10_C, 224, CorruptionProtocol.CIFAR_10_C),
    ],
)
def test_resolve_protocol(protocol, size, expected):
    assert resolve_protocol(protocol, size) is expected


def test_unknown_protocol_lists_the_choices():
    with pytest.raises(UsageError, match="imagenet-c, cifar-10-c, auto"):
        resolve_protocol("cifar10c", 32)


def test_corrupt_image_dispatches_on_the_protocol(image):
    cifar = corrupt(image, "zoom_blur", 3, SEED)
    assert np.array_equal(corrupt_image(image, "zoom_blur", 3, SEED, protocol="cifar-10-c"), cifar)
    assert np.array_equal(corrupt_image(image, "zoom_blur", 3, SEED, protocol=CorruptionProtocol.AUTO), cifar)
    imagenet = corrupt_image(image, "zoom_blur", 3, SEED)  # the default is unchanged: ImageNet-C
    assert not np.array_equal(imagenet, cifar)
    assert np.array_equal(corrupt_image(image, "zoom_blur", 3, SEED, protocol="imagenet-c"), imagenet)


def test_cifar_protocol_takes_images_that_imagenet_c_refuses():
    digits = make_image(28, 28)
    assert corrupt_image(digits, "fog", 2, SEED, protocol="auto").shape == digits.shape
    with pytest.raises(UsageError, match="at least 32"):
        corrupt_image(digits, "fog", 2, SEED)
