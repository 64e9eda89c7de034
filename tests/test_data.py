"""Dataset registry: the embedded default, on-disk layouts, seeded selection, clear errors."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ellrobust.core.errors import UsageError
from ellrobust.data import DATASETS, image_pixel_limit, load_dataset, read_rgb, select_indices


def test_digits_is_embedded_fixed_and_in_unit_range():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    x, y = test.dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert test.num_classes == 10 and 0 <= int(y) < 10
    assert load_dataset("digits").digest == test.digest != train.digest


def test_selection_is_seeded_and_shared():
    assert select_indices(360, 50, seed=0) == select_indices(360, 50, seed=0)
    assert select_indices(360, 50, seed=0) != select_indices(360, 50, seed=1)
    assert select_indices(10, None, seed=0) == list(range(10))
    with pytest.raises(UsageError):
        select_indices(10, 0, seed=0)


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if not s.needs_root])
def test_every_embedded_dataset_yields_unit_range_images(name):
    data = load_dataset(name)
    x, _ = data.dataset[len(data) - 1]
    assert x.shape == (3, data.spec.image_size, data.spec.image_size)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if s.needs_root])
def test_datasets_on_disk_need_an_existing_root(name, tmp_path):
    with pytest.raises(UsageError, match="--data-root"):
        load_dataset(name)
    with pytest.raises(UsageError, match="not a folder"):
        load_dataset(name, root=tmp_path / "missing")


def test_cifar10_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="no CIFAR-10 found"):
        load_dataset("cifar10", root=tmp_path)


def test_imagefolder_uses_deit_eval_transform(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (300, 260), color=(200, 10, 10)).save(tmp_path / "val" / wnid / "a.JPEG")
    data = load_dataset("imagefolder", root=tmp_path)
    assert data.num_classes == 2 and len(data) == 2
    x, y = data.dataset[1]
    assert x.shape == (3, 224, 224) and y == 1
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_imagefolder_at_another_img_size_is_other_data(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (300, 260), color=(20, 200, 10)).save(tmp_path / wnid / "a.JPEG")
    default, small = (
        load_dataset("imagefolder", root=tmp_path),
        load_dataset("imagefolder", root=tmp_path, image_size=64),
    )
    assert small.dataset[0][0].shape == (3, 64, 64) and small.spec.image_size == 64 and default.spec.image_size == 224
    assert small.digest != default.digest == load_dataset("imagefolder", root=tmp_path, image_size=224).digest
    with pytest.raises(UsageError, match="'digits' has 32 px images"):
        load_dataset("digits", image_size=64)
    assert load_dataset("digits", image_size=32).digest == load_dataset("digits").digest


def test_unknown_dataset_lists_choices():
    with pytest.raises(UsageError, match="Choices: digits"):
        load_dataset("cifar")


# --- hostile and odd image files (read_rgb: README, "Images") ------------------------------------------


def _png16(path, rows: np.ndarray, colour: bool) -> None:
    """A 16-bit PNG written by hand (Pillow writes no 16-bit RGB), rows of big-endian samples."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = rows.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", w, h, 16, 2 if colour else 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _pixels(path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read_rgb prints nothing, not even Pillow's warnings
        return np.asarray(read_rgb(path))


def test_sixteen_bit_images_keep_their_high_byte(tmp_path):
    values = np.array([[0, 255, 1000, 40000, 65535]])
    _png16(tmp_path / "grey.png", values, colour=False)
    _png16(tmp_path / "rgb.png", np.stack([values, values[:, ::-1], values], axis=-1), colour=True)
    (tmp_path / "grey.pgm").write_bytes(b"P5\n5 1\n65535\n" + values.astype(">u2").tobytes())  # Pillow: mode I
    high = (values >> 8).astype(
        np.uint8
    )  # 0, 0, 3, 156, 255: torchvision's convert("RGB") would give 0, 255, 255, 255, 255
    for name in ("grey.png", "grey.pgm"):
        assert np.array_equal(_pixels(tmp_path / name), np.repeat(high[..., None], 3, axis=-1)), name
    assert np.array_equal(_pixels(tmp_path / "rgb.png"), np.stack([high, high[:, ::-1], high], axis=-1))


def test_transparency_is_dropped_as_torchvision_does_without_a_warning(tmp_path):
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png", transparency=b"\x00\x80\xff")  # Pillow warns on converting this one
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    Image.new("LA", (4, 4), (90, 7)).save(tmp_path / "la.png")
    for name in ("p.png", "rgba.png", "la.png"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torchvision_pixels = np.asarray(
                Image.open(tmp_path / name).convert("RGB")
            )  # what torchvision's pil_loader gives
        assert np.array_equal(_pixels(tmp_path / name), torchvision_pixels), name
    assert tuple(_pixels(tmp_path / "p.png")[1, 1]) == (255, 0, 0)


def test_exif_orientation_is_not_applied(tmp_path):
    image = Image.new("RGB", (64, 32), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image.save(tmp_path / "plain.jpg", quality=95)
    assert Image.open(tmp_path / "rotated.jpg").getexif()[0x0112] == 6
    rotated, plain = _pixels(tmp_path / "rotated.jpg"), _pixels(tmp_path / "plain.jpg")
    assert rotated.shape == (32, 64, 3) and np.array_equal(
        rotated, plain
    )  # the stored pixels, as torchvision reads them


def test_the_pixel_limit_is_strict_and_can_be_raised(tmp_path):
    pillows = Image.MAX_IMAGE_PIXELS
    Image.new("L", (400, 300)).save(tmp_path / "large.png")
    with (
        image_pixel_limit(100_000),
        pytest.raises(UsageError, match=r"large\.png.*more than 100,000 pixels.*--max-image-pixels"),
    ):
        read_rgb(tmp_path / "large.png")  # 120 000 pixels: Pillow alone would only warn below twice its limit
    with image_pixel_limit(120_000):
        assert read_rgb(tmp_path / "large.png").size == (400, 300)
    assert Image.MAX_IMAGE_PIXELS == pillows  # restored after each block
    with pytest.raises(UsageError, match="--max-image-pixels must be a positive"):
        with image_pixel_limit(0):
            pass


@pytest.mark.parametrize(
    ("name", "make", "needle"),
    [
        ("truncated.jpg", lambda p: p.write_bytes(_jpeg_bytes()[:-300]), "truncated"),
        ("text.png", lambda p: p.write_text("not an image"), "UnidentifiedImageError"),
        ("float.tif", lambda p: Image.fromarray(np.ones((4, 4), np.float32)).save(p), "floating-point pixels"),
        ("wide.tif", lambda p: Image.fromarray(np.full((4, 4), 70_000, np.int32)).save(p), "beyond 16 bits"),
        ("empty.JPEG", lambda p: p.write_bytes(b""), "cannot be read"),
    ],
)
def test_unreadable_images_are_one_line_naming_the_file(tmp_path, name, make, needle):
    make(tmp_path / name)
    with pytest.raises(UsageError, match=needle) as info:
        read_rgb(tmp_path / name)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_a_png_named_jpeg_is_read_by_its_content(tmp_path):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "really-a-png.JPEG", format="PNG")
    assert tuple(_pixels(tmp_path / "really-a-png.JPEG")[0, 0]) == (1, 2, 3)


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()
