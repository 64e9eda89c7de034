"""ImageNet-style image folders (``<root>/<class>/<image>``), indexed in one pass, decoded with DeiT's transform."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from ellrobust.core.errors import DataWarning, UsageError
from ellrobust.data.images import read_rgb
from ellrobust.data.transforms import deit_eval_transform

#: File endings read as images (torchvision's list).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFiles(Dataset):
    """Images read from files: ``samples`` holds ``(path, label)``, decoded by :func:`~.images.read_rgb` and
    ``transform`` when asked for. The subclasses say which files (:class:`ImageFolderDataset`, ImageNet-O)."""

    samples: list[tuple[str, int]]
    transform: object

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(read_rgb(path)), label


class ImageFolderDataset(ImageFiles):
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

    ``classes`` numbers the class folders otherwise: a folder's label is its name's position in it
    (a released dataset's class list, or ``--class-map``). Every folder must then be in it, so that
    a wrong ``--data-root`` is refused instead of mislabelled; with ``complete`` every class must
    also have its folder (a released dataset has them all). ``what`` names the list in messages.
    """

    def __init__(
        self,
        root: Path,
        image_size: int = 224,
        classes: Sequence[str] | None = None,
        *,
        complete: bool = False,
        what: str = "the class list",
    ) -> None:
        self.root = root
        self.transform = deit_eval_transform(image_size)
        try:
            folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        except OSError as exc:
            raise UsageError(
                f"{str(root)!r} is not a readable image folder ({exc}); expected <root>/<class>/<image>.JPEG."
            ) from None
        if classes is None:
            _warn_string_order(root, folders)
            self.classes = folders
        else:
            self.classes = list(classes)
            _check_folders(root, folders, self.classes, complete, what)
        present = set(folders)
        h = hashlib.sha256(f"size={image_size}\n".encode())  # the same files at another --img-size are other data
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            if name not in present:
                continue  # a class without a folder keeps its label reserved
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


def build_imagefolder(split: str, root: Path | None, image_size: int, class_map: Path | None = None) -> Dataset:
    """``<root>/<split>`` when that folder exists (``val``, ``train``), else ``root`` itself is the split.

    ``class_map`` (``--class-map``) numbers the class folders as the file lists them (:func:`read_class_map`).
    """
    folder = root / split if root is not None and (root / split).is_dir() else root
    if class_map is None:
        return ImageFolderDataset(folder, image_size)
    what = f"--class-map {str(class_map)!r}"
    return ImageFolderDataset(folder, image_size, read_class_map(class_map), what=what)


def read_class_map(path: Path) -> list[str]:
    """``--class-map FILE``: timm's text format, one class folder name per line, its 0-based line number its label.

    As in timm's ``load_class_map``, each line is stripped and every line counts, so a blank line
    keeps its label reserved (no folder is named ""); a name given twice is refused.
    """
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as exc:
        message = f"--class-map {str(path)!r} cannot be read ({exc}); pass a text file, one class per line."
        raise UsageError(message) from None
    seen: dict[str, int] = {}
    for line, name in enumerate(names, start=1):
        if name and name in seen:
            raise UsageError(
                f"--class-map {str(path)!r} names class {name!r} twice (lines {seen[name]} and {line}); give each once."
            )
        seen[name] = line
    if not seen.keys() - {""}:
        raise UsageError(f"--class-map {str(path)!r} names no class; write one class folder name per line.")
    return names


def _check_folders(root: Path, folders: list[str], classes: list[str], complete: bool, what: str) -> None:
    """Refuse a folder that ``classes`` does not name, and with ``complete`` a class without its folder."""
    known = set(classes)
    stray = [name for name in folders if name not in known]
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise UsageError(
            f"{str(root)!r} has a class folder {stray[0]!r}{more} that is not in {what}; "
            "pass the folder that holds exactly its class folders."
        )
    if complete:
        present = set(folders)
        missing = [name for name in classes if name not in present]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UsageError(
                f"{str(root)!r} has no class folder {missing[0]!r}{more} of {what}; "
                "pass the folder that holds all its class folders."
            )


def _warn_string_order(root: Path, folders: list[str]) -> None:
    """Warn when every class folder is a number but sorted as text: folder ``10`` would get label 2, not 10.

    ImageNetV2's folders are ``0`` … ``999`` and its labels the numbers; torchvision's sorted names
    would silently mislabel almost every image. Names whose text order is their numeric order (``0`` …
    ``9``) are fine.
    """
    if not folders or not all(name.isdigit() for name in folders):
        return
    numeric = sorted(folders, key=int)
    if numeric == folders:
        return
    first = next(name for label, name in enumerate(folders) if numeric[label] != name)
    warnings.warn(
        f"the class folders of {str(root)!r} are all numbers, but labels follow their text order "
        f"(folder {first!r} gets label {folders.index(first)}); for ImageNetV2 pass --data imagenet-v2, "
        "else pass --class-map FILE.",
        DataWarning,
        stacklevel=3,
    )
