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

A corruption or severity missing from the folder is a one-line :class:`UsageError`, raised before
any image of it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ellrobust.corruptions import CORRUPTIONS
from ellrobust.corruptions.generate import chunk_bounds, from_uint8, n_chunks
from ellrobust.errors import UsageError
from ellrobust.registry import Registry

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


class ArrayChunks(Dataset):
    """Batches of one severity block of a ``<corruption>.npy`` array (memory-mapped, opened per process)."""

    def __init__(self, path: Path, offset: int, indices: list[int], labels: np.ndarray, batch_size: int) -> None:
        self.path = path
        self.rows = np.asarray(indices, dtype=np.int64) + offset
        self.labels = labels
        self.batch_size = batch_size

    def __len__(self) -> int:
        return n_chunks(len(self.rows), self.batch_size)

    def __getitem__(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rows = self.rows[chunk_bounds(chunk, len(self.rows), self.batch_size)]
        images = np.load(self.path, mmap_mode="r")[rows]
        return from_uint8(images), torch.from_numpy(self.labels[rows].astype(np.int64)), 0


class CifarCSource:
    """CIFAR-10-C: severity blocks of N rows, where N is the size of the clean (test) split."""

    label = "cifar10-c"
    imagenet = False

    def __init__(self, root: Path, ctx) -> None:
        self.root = root
        self.ctx = ctx
        self.per_severity = len(ctx.data)
        self.labels = np.load(root / "labels.npy")
        if len(self.labels) != N_SEVERITIES * self.per_severity:
            raise UsageError(
                f"{str(root / 'labels.npy')!r} holds {len(self.labels)} labels, not {N_SEVERITIES} × the {self.per_severity} images of "
                f"{ctx.data.spec.name}/{ctx.data.split}; a -C set must be the test split of --data."
            )
        clean = _clean_labels(ctx.data.dataset)
        if clean is not None and not np.array_equal(self.labels[: self.per_severity][ctx.indices], clean[ctx.indices]):
            raise UsageError(
                f"the labels in {str(root / 'labels.npy')!r} differ from those of {ctx.data.spec.name}/{ctx.data.split}; "
                "a -C set must be the test split of --data, in the same order."
            )

    def check(self, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
        size = self.ctx.data.spec.image_size
        for name in corruptions:
            path = self.root / f"{name}.npy"
            if not path.is_file():
                raise UsageError(f"--corruption-root {str(self.root)!r} has no {name!r} (expected {path.name}).")
            shape = np.load(path, mmap_mode="r").shape
            if len(shape) != 4 or shape[1:] != (size, size, 3):
                raise UsageError(f"{str(path)!r} holds images of shape {shape[1:]}; expected ({size}, {size}, 3) uint8.")
            present = min(shape[0] // self.per_severity, N_SEVERITIES)
            missing = [s for s in severities if s > present]
            if missing:
                raise UsageError(
                    f"{str(path)!r} holds {shape[0]} rows, {present} severity block(s) of {self.per_severity} images; "
                    f"severity {missing[0]} is missing."
                )

    def chunks(self, corruption: str, severity: int) -> ArrayChunks:
        offset = (severity - 1) * self.per_severity
        return ArrayChunks(self.root / f"{corruption}.npy", offset, self.ctx.indices, self.labels, self.ctx.config.batch_size)


# --- ImageNet-C --------------------------------------------------------------------------------------


class FitTo:
    """ToTensor, plus the DeiT resize/centre crop only for files that are not already ``size`` px square."""

    def __init__(self, size: int) -> None:
        from torchvision import transforms

        from ellrobust.data import deit_eval_transform

        self.size = size
        self.to_tensor = transforms.ToTensor()
        self.resize_crop = deit_eval_transform(size)

    def __call__(self, image) -> torch.Tensor:
        if image.size == (self.size, self.size):
            return self.to_tensor(image)
        return self.resize_crop(image)


class ImageChunks(Dataset):
    """Batches of image files (path, label), decoded and fitted to the model's size."""

    def __init__(self, files: list[tuple[Path, int]], batch_size: int, transform: FitTo) -> None:
        self.files = files
        self.batch_size = batch_size
        self.transform = transform

    def __len__(self) -> int:
        return n_chunks(len(self.files), self.batch_size)

    def __getitem__(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        from PIL import Image

        images, labels = [], []
        for p in chunk_bounds(chunk, len(self.files), self.batch_size):
            path, label = self.files[p]
            with Image.open(path) as im:
                images.append(self.transform(im.convert("RGB")))
            labels.append(label)
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64), 0


class ImageNetCSource:
    """ImageNet-C, paired image by image with the clean ``imagefolder`` selection."""

    label = "imagenet-c"
    imagenet = True

    def __init__(self, root: Path, ctx) -> None:
        samples = getattr(ctx.data.dataset, "samples", None)
        if samples is None:
            raise UsageError(
                f"{str(root)!r} is an ImageNet-C folder; evaluate it with --data imagefolder --data-root <the clean val folder> "
                "so that each corrupted image is paired with its clean one."
            )
        self.root = root
        self.ctx = ctx
        self.selected = [(Path(samples[i][0]), int(samples[i][1])) for i in ctx.indices]
        self.transform = FitTo(ctx.data.spec.image_size)

    def check(self, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
        for name in corruptions:
            if not (self.root / name).is_dir():
                raise UsageError(f"--corruption-root {str(self.root)!r} has no {name!r} folder (expected {name}/<severity>/<wnid>/).")
            for s in severities:
                if not (self.root / name / str(s)).is_dir():
                    raise UsageError(f"--corruption-root {str(self.root)!r} has no severity {s} of {name!r} (expected {name}/{s}/).")

    def chunks(self, corruption: str, severity: int) -> ImageChunks:
        folder = self.root / corruption / str(severity)
        files = [(self._find(folder, clean), label) for clean, label in self.selected]
        return ImageChunks(files, self.ctx.config.batch_size, self.transform)

    def _find(self, folder: Path, clean: Path) -> Path:
        """The corrupted twin of a clean file: same class folder and name, any image extension."""
        same = folder / clean.parent.name / clean.name
        if same.is_file():
            return same
        twins = sorted((folder / clean.parent.name).glob(f"{clean.stem}.*"))
        if not twins:
            raise UsageError(f"{str(folder)!r} has no counterpart of the clean image {clean.parent.name}/{clean.name}.")
        return twins[0]


def _has_corruption_folders(root: Path) -> bool:
    return any((root / name).is_dir() for name in CORRUPTIONS.names())


LAYOUTS.add(
    "cifar10-c",
    Layout("cifar10-c", "<root>/<corruption>.npy (5 severities × N images, 32×32×3 uint8) and <root>/labels.npy",
           lambda root: (root / "labels.npy").is_file(), CifarCSource),
)
LAYOUTS.add(
    "imagenet-c",
    Layout("imagenet-c", "<root>/<corruption>/<severity>/<wnid>/<image>", _has_corruption_folders, ImageNetCSource),
)
