"""Dataset registry. Every dataset yields ``(image, label)`` with float CHW images in [0, 1].

Nothing here downloads: the default (scikit-learn's digits) ships inside the scikit-learn wheel, and
every other dataset is read from a local ``--data-root``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ellrobust.errors import UsageError
from ellrobust.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to build a split, and the defaults that go with it.

    ``build(split, root)`` makes a split at ``image_size``. A ``resizable`` dataset (decoded files,
    resized and cropped) takes any size: its builder is ``build(split, root, image_size)``.
    """

    name: str
    description: str
    image_size: int
    default_arch: str
    default_eps: tuple[float, ...]
    build: Callable[..., Dataset]
    num_classes: int | None = None  # None: read from the data (image folders)
    needs_root: bool = False
    splits: tuple[str, ...] = ("train", "test")
    eval_split: str = "test"
    pixel_dtype: str = "float32"  # "uint8" where every image is 8-bit (decoded files): stored 4× smaller, losslessly
    resizable: bool = False  # --img-size applies: the images are resized and cropped to any size


@dataclass(frozen=True)
class LoadedDataset:
    """A built split plus what the results table records about it (``spec.image_size``: the size it was built at)."""

    spec: DatasetSpec
    split: str
    dataset: Dataset
    num_classes: int
    digest: str

    def __len__(self) -> int:
        return len(self.dataset)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def load_dataset(name: str, split: str | None = None, root: str | os.PathLike | None = None, image_size: int | None = None) -> LoadedDataset:
    """Build a split of a registered dataset (``split`` defaults to its evaluation split).

    ``image_size`` (``--img-size``) resizes an image folder's images to another side than the
    dataset's default (the size is part of an image folder's digest: other pixels, other data).
    Datasets stored at one size accept only that size.
    """
    spec = DATASETS.get(name)
    split = split or spec.eval_split
    if split not in spec.splits:
        raise UsageError(f"dataset {name!r} has no split {split!r}; choose one of {', '.join(spec.splits)}.")
    if image_size is not None and image_size != spec.image_size:
        if not spec.resizable:
            raise UsageError(
                f"dataset {name!r} has {spec.image_size} px images; --img-size {image_size} applies to image folders "
                f"(resized and cropped to it). Drop --img-size or pass {spec.image_size}."
            )
        spec = replace(spec, image_size=image_size)
    path = None
    if spec.needs_root:
        if root is None:
            raise UsageError(f"dataset {name!r} is read from disk; pass --data-root PATH (it never downloads).")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise UsageError(f"--data-root {str(path)!r} is not a folder; pass the folder that holds the {name} data.")
    ds = spec.build(split, path, spec.image_size) if spec.resizable else spec.build(split, path)
    if len(ds) == 0:
        raise UsageError(f"dataset {name!r} split {split!r} at {str(path)!r} holds no images; check --data-root.")
    num_classes = spec.num_classes or len(ds.classes)
    return LoadedDataset(spec, split, ds, num_classes, dataset_digest(ds))


def dataset_digest(ds: Dataset) -> str:
    """Short sha256 identifying the data: tensor bytes for in-memory sets, file list for folders.

    A dataset that computed its digest while indexing (an image folder) provides it as ``digest``.
    """
    if isinstance(getattr(ds, "digest", None), str):
        return ds.digest
    h = hashlib.sha256()
    if isinstance(ds, TensorDataset):
        for t in ds.tensors:
            h.update(t.numpy().tobytes())
    elif hasattr(ds, "data") and hasattr(ds, "targets"):
        h.update(np.ascontiguousarray(ds.data).tobytes())
        h.update(np.asarray(ds.targets).tobytes())
    else:
        h.update(f"{type(ds).__name__}:{len(ds)}".encode())
    return h.hexdigest()[:12]


def select_indices(n_total: int, n: int | None, seed: int) -> list[int]:
    """The seeded subset of a split that every model of a run sees: same seed, same images."""
    if n is None or n >= n_total:
        return list(range(n_total))
    if n <= 0:
        raise UsageError(f"--n must be positive (got {n}).")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


def subset(data: LoadedDataset, indices: list[int]) -> Dataset:
    return Subset(data.dataset, indices)


# --- the embedded default -------------------------------------------------------------------------

DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_tensors() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()  # (1797, 3, 32, 32) RGB
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx = np.arange(len(labels))
    train_idx, _ = train_test_split(idx, test_size=0.2, random_state=DIGITS_SPLIT_SEED, stratify=digits.target)
    is_train = np.zeros(len(labels), dtype=bool)
    is_train[train_idx] = True
    return images, labels, is_train


def _build_digits(split: str, root: Path | None) -> Dataset:
    images, labels, is_train = _digits_tensors()
    mask = torch.from_numpy(is_train if split == "train" else ~is_train)
    return TensorDataset(images[mask], labels[mask])


DATASETS.add(
    "digits",
    DatasetSpec(
        name="digits",
        description="scikit-learn's 8×8 handwritten digits, up-sampled to 32×32 RGB; fixed stratified 80/20 split (embedded, offline)",
        image_size=32,
        default_arch="deit-micro",
        default_eps=(1 / 255, 2 / 255, 4 / 255, 8 / 255),
        build=_build_digits,
        num_classes=10,
    ),
)


# --- synthetic data for tests -----------------------------------------------------------------------


def _build_synthetic(split: str, root: Path | None) -> Dataset:
    """A learnable toy set: class k lights up the k-th cell of a 4×4 grid (+ noise), 32 px."""
    n = 256 if split == "train" else 64
    g = torch.Generator().manual_seed(1 if split == "train" else 2)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = 0.15 * torch.rand(n, 3, 32, 32, generator=g)
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 4)
        images[i, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 0.8
    return TensorDataset(images.clamp(0, 1), labels)


DATASETS.add(
    "synthetic",
    DatasetSpec(
        name="synthetic",
        description="tiny seeded synthetic set (class = position of a bright square), for tests",
        image_size=32,
        default_arch="deit-micro",
        default_eps=(2 / 255, 8 / 255),
        build=_build_synthetic,
        num_classes=10,
    ),
)


# --- data on disk -----------------------------------------------------------------------------------


def _build_cifar10(split: str, root: Path | None) -> Dataset:
    from torchvision import datasets, transforms

    try:
        return datasets.CIFAR10(str(root), train=split == "train", download=False, transform=transforms.ToTensor())
    except RuntimeError:
        raise UsageError(
            f"no CIFAR-10 found under {str(root)!r}: expected torchvision's format "
            "(<root>/cifar-10-batches-py/data_batch_1 …); download it elsewhere and copy it there."
        ) from None


DATASETS.add(
    "cifar10",
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10 from --data-root in torchvision's format (never downloads)",
        image_size=32,
        default_arch="deit-micro",
        default_eps=(1 / 255, 2 / 255, 4 / 255, 8 / 255),
        build=_build_cifar10,
        num_classes=10,
        needs_root=True,
        pixel_dtype="uint8",
    ),
)


def deit_resize_crop(image_size: int = 224):
    """DeiT's evaluation geometry on PIL images: resize the short side to size/0.875 (bicubic), centre crop.

    The result is still an 8-bit PIL image, so ``ToTensor`` of it gives exact multiples of 1/255.
    """
    from torchvision import transforms

    resize = int(round(image_size / 0.875))
    return transforms.Compose([transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(image_size)])


def deit_eval_transform(image_size: int = 224):
    """DeiT's evaluation transform: :func:`deit_resize_crop`, then a float CHW tensor in [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([deit_resize_crop(image_size), transforms.ToTensor()])


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
            f"image {str(path)!r} has more than {limit:,} pixels, the limit against decompression bombs; if it is a genuine "
            "large image, raise the limit with --max-image-pixels N, else remove it."
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
            raise UsageError(f"image {str(path)!r} has pixel values beyond 16 bits (mode {image.mode}); convert it to 8 or 16 bits per channel.")
        image = Image.fromarray((pixels.astype(np.uint16) >> 8).astype(np.uint8), "L")
    elif image.mode == "F":
        raise UsageError(f"image {str(path)!r} has floating-point pixels (mode F), which have no agreed 8-bit scale; convert it to 8 bits per channel.")
    return image.convert("RGB")


#: File endings read as images (torchvision's list).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderDataset(Dataset):
    """``<root>/<class>/<image>`` files, indexed in one pass and decoded with the DeiT eval transform at ``image_size``.

    Why not torchvision's ``ImageFolder``: its listing is followed by a second pass over every file to
    stat it for the dataset digest, and at ImageNet scale (50 000 files) each pass costs seconds of
    startup. Here one walk collects the samples and the digest (class, file name, size) together. Class
    indices follow torchvision's convention: sorted class folder names, files sorted within each
    (sub)folder. A class folder without images is kept (its index stays reserved), so a subset of
    ImageNet's validation folders keeps ImageNet's label numbering.

    Policy (documented in the README): an image that cannot be decoded (:func:`read_rgb`) stops the
    run with a one-line error naming the file, instead of being skipped, so that ``n`` and the image
    set never change silently between runs or models; finished units stay saved and the run resumes
    once the file is fixed or removed.
    """

    def __init__(self, root: Path, image_size: int = 224) -> None:
        self.root = root
        self.transform = deit_eval_transform(image_size)
        try:
            self.classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        except OSError as exc:
            raise UsageError(f"{str(root)!r} is not a readable image folder ({exc}); expected <root>/<class>/<image>.JPEG.") from None
        h = hashlib.sha256(f"size={image_size}\n".encode())  # the same files at another --img-size are other data
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for folder, dirs, files in sorted(os.walk(root / name, followlinks=True)):
                dirs.sort()
                for file in sorted(files):
                    if file.lower().endswith(IMAGE_EXTENSIONS):
                        path = os.path.join(folder, file)
                        try:
                            size = os.stat(path).st_size
                        except OSError as exc:  # a dangling link, a file removed while indexing
                            raise UsageError(f"image {path!r} cannot be read ({exc.strerror}); replace or remove it.") from None
                        self.samples.append((path, label))
                        h.update(f"{name}/{file}:{label}:{size}\n".encode())
        if not self.samples:
            raise UsageError(f"{str(root)!r} holds no images in class folders; expected <root>/<class>/<image>.JPEG.")
        self.targets = [label for _, label in self.samples]
        self.digest = h.hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(read_rgb(path)), label


def _build_imagefolder(split: str, root: Path | None, image_size: int) -> Dataset:
    folder = root / split if root is not None and (root / split).is_dir() else root
    return ImageFolderDataset(folder, image_size)


DATASETS.add(
    "imagefolder",
    DatasetSpec(
        name="imagefolder",
        description="ImageNet-style folder (<root>[/val]/<wnid>/*.JPEG), DeiT eval transform: resize 256 bicubic, crop 224 (--img-size S: resize S/0.875, crop S)",
        image_size=224,
        default_arch="deit-tiny",
        default_eps=(1 / 255, 2 / 255, 4 / 255),
        build=_build_imagefolder,
        needs_root=True,
        splits=("val", "train"),
        eval_split="val",
        pixel_dtype="uint8",
        resizable=True,
    ),
)
