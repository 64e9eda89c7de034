"""ImageNet-style image folders (``<root>/<class>/<image>``), indexed in one pass, decoded with DeiT's transform."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from torch.utils.data import Dataset

from ellrobust.data.images import read_rgb
from ellrobust.data.transforms import deit_eval_transform
from ellrobust.errors import UsageError

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

    Policy (documented in the README): an image that cannot be decoded (:func:`~.images.read_rgb`)
    stops the run with a one-line error naming the file, instead of being skipped, so that ``n`` and
    the image set never change silently between runs or models; finished units stay saved and the run
    resumes once the file is fixed or removed.
    """

    def __init__(self, root: Path, image_size: int = 224) -> None:
        self.root = root
        self.transform = deit_eval_transform(image_size)
        try:
            self.classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        except OSError as exc:
            raise UsageError(
                f"{str(root)!r} is not a readable image folder ({exc}); expected <root>/<class>/<image>.JPEG."
            ) from None
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
                            message = f"image {path!r} cannot be read ({exc.strerror}); replace or remove it."
                            raise UsageError(message) from None
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


def build_imagefolder(split: str, root: Path | None, image_size: int) -> Dataset:
    """``<root>/<split>`` when that folder exists (``val``, ``train``), else ``root`` itself is the split."""
    folder = root / split if root is not None and (root / split).is_dir() else root
    return ImageFolderDataset(folder, image_size)
