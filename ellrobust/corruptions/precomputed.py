"""Precomputed corruption sets read from a local folder (``--corruption-root PATH``).

Two layouts are registered, recognised by what the folder holds:

* **CIFAR-10-C** (Hendrycks & Dietterich 2019): ``<root>/<corruption>.npy``, uint8 images of shape
  (5·N, 32, 32, 3) where rows (s−1)·N … s·N − 1 are severity s of the N test images, plus
  ``<root>/labels.npy``. It is the test split of the clean data, so the run's selected indices
  (``ctx.indices``) pick the same images in every severity block, and the labels are checked against
  the clean ones.
* **ImageNet-C**: ``<root>/<corruption>/<severity>/<wnid>/<file>``. Its files are the validation images,
  already resized and centre-cropped to 224 px, under their original names; each selected clean image
  (``--data imagefolder``) is matched to the file of the same class folder and name, and read with
  ``ToTensor`` only (Resize/CenterCrop only when a file is not already the model's size). Labels are the
  clean set's, so the class indices agree even when a -C folder lacks some classes.
* **ImageNet-3DCC** (Kar et al. 2022): the same layout and pairing, ``<root>/<corruption>/<severity>/<wnid>/<file>``,
  with ImageNet-3DCC's corruption names (:data:`~ellrobust.corruptions.catalog.IMAGENET_3DCC`); its rows
  name the source ``imagenet-3dcc``. A folder holding ImageNet-C corruptions is read as ImageNet-C.

A corruption or severity missing from the folder is a one-line :class:`UsageError`, raised before
any image of it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, TensorDataset

from ellrobust.core.errors import UsageError
from ellrobust.core.registry import Registry
from ellrobust.corruptions.batches import BatchPlan
from ellrobust.corruptions.catalog import CORRUPTIONS, IMAGENET_3DCC
from ellrobust.data.images import read_rgb
from ellrobust.data.transforms import deit_resize_crop

#: CIFAR-10-C stacks the five severities of each corruption in one array.
N_SEVERITIES = 5


@dataclass(frozen=True)
class Layout:
    """A registered folder layout: how to recognise it and how to open it for a run."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    open: Callable[[Path, object], object]  # (root, RunContext) -> a corruption source


LAYOUTS: Registry[Layout] = Registry("precomputed corruption layout")


def open_precomputed(root: Path, ctx):
    """The source for a ``--corruption-root`` folder, whichever registered layout it follows."""
    root = root.expanduser()
    if not root.is_dir():
        raise UsageError(f"--corruption-root {str(root)!r} is not a folder.")
    for _, layout in LAYOUTS.items():
        if layout.detect(root):
            return layout.open(root, ctx)
    expected = "; ".join(f"{layout.name}: {layout.description}" for _, layout in LAYOUTS.items())
    raise UsageError(f"--corruption-root {str(root)!r} matches no known layout ({expected}).")


def _clean_labels(ds: Dataset) -> np.ndarray | None:
    """All labels of an in-memory dataset without decoding images, or None if unknown."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[1].numpy()
    targets = getattr(ds, "targets", None)
    return np.asarray(targets) if targets is not None else None


# --- CIFAR-10-C --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayTask:
    """Read rows of a ``<corruption>.npy`` array (memory-mapped, in a worker or inline)."""

    path: Path
    rows: tuple[int, ...]

    def __call__(self) -> np.ndarray:
        return np.ascontiguousarray(np.load(self.path, mmap_mode="r")[list(self.rows)])


class CifarCSource:
    """CIFAR-10-C: severity blocks of N rows, where N is the size of the clean (test) split."""

    label = "cifar10-c"
    params: dict = {}
    imagenet = False

    def __init__(self, root: Path, ctx) -> None:
        self.root = root
        self.ctx = ctx
        self.per_severity = len(ctx.data)
        self.labels = np.load(root / "labels.npy")
        if len(self.labels) != N_SEVERITIES * self.per_severity:
            raise UsageError(
                f"{str(root / 'labels.npy')!r} holds {len(self.labels)} labels, "
                f"not {N_SEVERITIES} × the {self.per_severity} images of "
                f"{ctx.data.spec.name}/{ctx.data.split}; a -C set must be the test split of --data."
            )
        clean = _clean_labels(ctx.data.dataset)
        if clean is not None and not np.array_equal(self.labels[: self.per_severity][ctx.indices], clean[ctx.indices]):
            raise UsageError(
                f"the labels in {str(root / 'labels.npy')!r} differ from those of "
                f"{ctx.data.spec.name}/{ctx.data.split}; "
                "a -C set must be the test split of --data, in the same order."
            )

    def check(self, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
        size = self.ctx.image_size
        for name in corruptions:
            path = self.root / f"{name}.npy"
            if not path.is_file():
                raise UsageError(f"--corruption-root {str(self.root)!r} has no {name!r} (expected {path.name}).")
            shape = np.load(path, mmap_mode="r").shape
            if len(shape) != 4 or shape[1:] != (size, size, 3):
                raise UsageError(
                    f"{str(path)!r} holds images of shape {shape[1:]}; expected ({size}, {size}, 3) uint8."
                )
            present = min(shape[0] // self.per_severity, N_SEVERITIES)
            missing = [s for s in severities if s > present]
            if missing:
                raise UsageError(
                    f"{str(path)!r} holds {shape[0]} rows, {present} severity block(s) of {self.per_severity} images; "
                    f"severity {missing[0]} is missing."
                )

    def reserve(self, plans) -> None:
        """A precomputed set is only read: nothing to reserve."""

    def batch_plan(self, corruption: str, severity: int, positions: list[int]) -> BatchPlan:
        offset = (severity - 1) * self.per_severity
        return BatchPlan(
            [ArrayTask(self.root / f"{corruption}.npy", tuple(offset + self.ctx.indices[p] for p in positions))]
        )


# --- ImageNet-C --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileTask:
    """Decode one -C image file to uint8 HWC, with the DeiT resize/centre crop only if it is not ``size`` px square."""

    path: Path
    size: int

    def __call__(self) -> np.ndarray:
        image = read_rgb(self.path)  # the clean images' rules: size limit, no EXIF rotation, one-line errors
        if image.size != (self.size, self.size):
            image = deit_resize_crop(self.size)(image)
        return np.asarray(image, dtype=np.uint8)[None]


class ImageNetCSource:
    """ImageNet-C, paired image by image with the clean ``imagefolder`` selection."""

    label = "imagenet-c"
    params: dict = {}
    imagenet = True

    def __init__(self, root: Path, ctx) -> None:
        samples = getattr(ctx.data.dataset, "samples", None)
        if samples is None:
            raise UsageError(
                f"{str(root)!r} is an ImageNet-C folder; "
                "evaluate it with --data imagefolder --data-root <the clean val folder> "
                "so that each corrupted image is paired with its clean one."
            )
        self.root = root
        self.ctx = ctx
        self.selected = [Path(samples[i][0]) for i in ctx.indices]
        self.size = ctx.image_size

    def check(self, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
        for name in corruptions:
            if not (self.root / name).is_dir():
                raise UsageError(
                    f"--corruption-root {str(self.root)!r} has no {name!r} folder (expected {name}/<severity>/<wnid>/)."
                )
            for s in severities:
                if not (self.root / name / str(s)).is_dir():
                    raise UsageError(
                        f"--corruption-root {str(self.root)!r} has no severity {s} of {name!r} (expected {name}/{s}/)."
                    )

    def reserve(self, plans) -> None:
        """A precomputed set is only read: nothing to reserve."""

    def batch_plan(self, corruption: str, severity: int, positions: list[int]) -> BatchPlan:
        folder = self.root / corruption / str(severity)
        return BatchPlan([FileTask(self._find(folder, self.selected[p]), self.size) for p in positions])

    def _find(self, folder: Path, clean: Path) -> Path:
        """The corrupted twin of a clean file: same class folder and name, any image extension."""
        same = folder / clean.parent.name / clean.name
        if same.is_file():
            return same
        twins = sorted((folder / clean.parent.name).glob(f"{clean.stem}.*"))
        if not twins:
            raise UsageError(f"{str(folder)!r} has no counterpart of the clean image {clean.parent.name}/{clean.name}.")
        return twins[0]


class ImageNet3DCCSource(ImageNetCSource):
    """ImageNet-3DCC: ImageNet-C's layout and pairing; its rows name their source apart."""

    label = "imagenet-3dcc"


def _has_folders(names: list[str]) -> Callable[[Path], bool]:
    return lambda root: any((root / name).is_dir() for name in names)


LAYOUTS.add(
    "cifar10-c",
    Layout(
        "cifar10-c",
        "<root>/<corruption>.npy (5 severities × N images, 32×32×3 uint8) and <root>/labels.npy",
        lambda root: (root / "labels.npy").is_file(),
        CifarCSource,
    ),
)
LAYOUTS.add(
    "imagenet-c",
    Layout(
        "imagenet-c",
        "<root>/<corruption>/<severity>/<wnid>/<image>",
        _has_folders(CORRUPTIONS.names()),
        ImageNetCSource,
    ),
)
LAYOUTS.add(
    "imagenet-3dcc",
    Layout(
        "imagenet-3dcc",
        "<root>/<3DCC corruption>/<severity>/<wnid>/<image>",
        _has_folders(IMAGENET_3DCC.names()),
        ImageNet3DCCSource,
    ),
)
