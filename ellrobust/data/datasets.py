"""The dataset registry and how a run gets its images: :func:`load_dataset`, :func:`select_indices`.

Every dataset yields ``(image, label)`` with float CHW images in [0, 1]. :data:`DATASETS` is built
here, explicitly, from the builders of :mod:`.digits`, :mod:`.synthetic`, :mod:`.cifar10`,
:mod:`.imagefolder`, :mod:`.shifts` and :mod:`.imagenet_o`; registration order is listing order
(``ellrobust datasets``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ellrobust.core.errors import UsageError
from ellrobust.core.registry import Registry
from ellrobust.data.cifar10 import build_cifar10
from ellrobust.data.digits import build_digits
from ellrobust.data.imagefolder import build_imagefolder
from ellrobust.data.imagenet_o import build_imagenet_o
from ellrobust.data.shifts import IMAGENET_A, IMAGENET_R, IMAGENET_SKETCH, IMAGENET_V2, indices_in_1k
from ellrobust.data.synthetic import build_synthetic


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
    # the shipped class list (data/classes/<name>.txt) of ImageNet-1k classes that a 1000-class model's
    # logits are masked to (ImageNet-R, -A: 200 classes); None: models give the dataset's classes
    subset_of_1k: str | None = None
    takes_class_map: bool = False  # --class-map applies: the class folders come from the data
    natural_shift: bool = False  # a natural distribution shift of another dataset: its accuracy is a claim


@dataclass(frozen=True)
class LoadedDataset:
    """A built split plus what the results table records about it (``spec.image_size``: the size it was built at)."""

    spec: DatasetSpec
    split: str
    dataset: Dataset
    num_classes: int
    digest: str
    class_indices_1k: tuple[int, ...] | None = None  # ``spec.subset_of_1k``'s positions among ImageNet-1k's

    def __len__(self) -> int:
        return len(self.dataset)


#: What the natural distribution shifts of ImageNet (:mod:`.shifts`) share: ImageNet's models and
#: transform, one split, read from a local folder.
_SHIFT = dict(
    natural_shift=True,
    image_size=224,
    default_arch="deit-tiny",
    default_eps=(1 / 255, 2 / 255, 4 / 255),
    needs_root=True,
    splits=("test",),
    eval_split="test",
    pixel_dtype="uint8",
    resizable=True,
)

_DEFINITIONS = (
    DatasetSpec(
        name="digits",
        description="scikit-learn's 8×8 handwritten digits, up-sampled to 32×32 RGB; fixed stratified 80/20 split "
        "(embedded, offline)",
        image_size=32,
        default_arch="deit-micro",
        default_eps=(1 / 255, 2 / 255, 4 / 255, 8 / 255),
        build=build_digits,
        num_classes=10,
    ),
    DatasetSpec(
        name="synthetic",
        description="tiny seeded synthetic set (class = position of a bright square), for tests",
        image_size=32,
        default_arch="deit-micro",
        default_eps=(2 / 255, 8 / 255),
        build=build_synthetic,
        num_classes=10,
    ),
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10 from --data-root in torchvision's format (never downloads)",
        image_size=32,
        default_arch="deit-micro",
        default_eps=(1 / 255, 2 / 255, 4 / 255, 8 / 255),
        build=build_cifar10,
        num_classes=10,
        needs_root=True,
        pixel_dtype="uint8",
    ),
    DatasetSpec(
        name="imagefolder",
        description="ImageNet-style folder (<root>[/val]/<wnid>/*.JPEG), DeiT eval transform: resize 256 bicubic, "
        "crop 224 (--img-size S: resize S/0.875, crop S)",
        image_size=224,
        default_arch="deit-tiny",
        default_eps=(1 / 255, 2 / 255, 4 / 255),
        build=build_imagefolder,
        needs_root=True,
        splits=("val", "train"),
        eval_split="val",
        pixel_dtype="uint8",
        resizable=True,
        takes_class_map=True,
    ),
    DatasetSpec(
        name="imagenet-r",
        description="ImageNet-R renditions, 200 wnid folders (<root>[/imagenet-r]/<wnid>/*.jpg); a 1000-class "
        "model's logits are masked to the 200 classes",
        subset_of_1k="imagenet_r",
        build=IMAGENET_R.build,
        num_classes=200,
        **_SHIFT,
    ),
    DatasetSpec(
        name="imagenet-a",
        description="ImageNet-A natural adversarial examples, 200 wnid folders (<root>[/imagenet-a]/<wnid>/*.jpg); "
        "a 1000-class model's logits are masked to the 200 classes",
        subset_of_1k="imagenet_a",
        build=IMAGENET_A.build,
        num_classes=200,
        **_SHIFT,
    ),
    DatasetSpec(
        name="imagenet-sketch",
        description="ImageNet-Sketch, the 1000 wnid folders (<root>[/sketch]/<wnid>/*.JPEG), labelled as ImageNet",
        build=IMAGENET_SKETCH.build,
        num_classes=1000,
        **_SHIFT,
    ),
    DatasetSpec(
        name="imagenet-v2",
        description="ImageNetV2, folders 0 … 999 named by their label, in numeric order "
        "(<root>[/imagenetv2-matched-frequency-format-val]/<label>/*.jpeg)",
        build=IMAGENET_V2.build,
        num_classes=1000,
        **_SHIFT,
    ),
    DatasetSpec(
        name="imagenet-o",
        description="ImageNet-O out-of-distribution detection: --data-root holding imagenet-o/<wnid>/*.jpg and "
        "ImageNet's val/<wnid>/*.JPEG (in-distribution: its images of ImageNet-O's 200 classes), DeiT eval transform",
        image_size=224,
        default_arch="deit-tiny",
        default_eps=(1 / 255, 2 / 255, 4 / 255),
        build=build_imagenet_o,
        needs_root=True,
        splits=("val",),
        eval_split="val",
        pixel_dtype="uint8",
        resizable=True,
    ),
)


def _registry(specs: Iterable[DatasetSpec]) -> Registry[DatasetSpec]:
    registry: Registry[DatasetSpec] = Registry("dataset")
    for spec in specs:
        registry.add(spec.name, spec)
    return registry


DATASETS: Registry[DatasetSpec] = _registry(_DEFINITIONS)


def load_dataset(
    name: str,
    split: str | None = None,
    root: str | os.PathLike | None = None,
    image_size: int | None = None,
    class_map: str | os.PathLike | None = None,
) -> LoadedDataset:
    """Build a split of a registered dataset (``split`` defaults to its evaluation split).

    ``image_size`` (``--img-size``) resizes an image folder's images to another side than the
    dataset's default (the size is part of an image folder's digest: other pixels, other data).
    Datasets stored at one size accept only that size. ``class_map`` (``--class-map``) numbers an
    image folder's classes as the file lists them (the labels are part of the digest).
    """
    spec = DATASETS.get(name)
    if class_map is not None and not spec.takes_class_map:
        takers = ", ".join(n for n, s in DATASETS.items() if s.takes_class_map)
        raise UsageError(
            f"--class-map applies to datasets whose classes come from the folder ({takers}); "
            f"{name!r} has its own class list. Drop --class-map."
        )
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
    extra = {"class_map": Path(class_map).expanduser()} if class_map is not None else {}
    ds = spec.build(split, path, spec.image_size, **extra) if spec.resizable else spec.build(split, path)
    if len(ds) == 0:
        raise UsageError(f"dataset {name!r} split {split!r} at {str(path)!r} holds no images; check --data-root.")
    num_classes = spec.num_classes or len(ds.classes)
    mask = indices_in_1k(spec.subset_of_1k) if spec.subset_of_1k is not None else None
    return LoadedDataset(spec, split, ds, num_classes, dataset_digest(ds), mask)


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


def select_indices(n_total: int, n: int | None, seed: int, among: Sequence[int] | None = None) -> list[int]:
    """The seeded subset of a split that every model of a run sees: same seed, same images.

    ``among`` (``--indices``) restricts it to those dataset indices: all of them, or with ``n`` the
    seeded ``n`` of them.
    """
    pool = list(range(n_total)) if among is None else sorted(among)
    if n is None or n >= len(pool):
        return pool
    if n <= 0:
        raise UsageError(f"--n must be positive (got {n}).")
    g = torch.Generator().manual_seed(seed)
    return sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:n].tolist())
