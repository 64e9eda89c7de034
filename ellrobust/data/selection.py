"""``--indices FILE``: a fixed list of a split's images instead of the seeded ``--n`` subset.

A benchmark's subset is a list of files (RobustBench's 5000 ImageNet validation images are
``helper_files/imagenet_test_image_ids.txt``, lines such as ``n01440764/ILSVRC2012_val_00000293.JPEG``);
comparing against its numbers needs exactly those images, not a seeded draw of the same size.

The file holds one entry a line: a dataset index (a whole number, the position in the split's
order) or a path relative to the split folder, with ``/`` between folders; blank lines and lines
starting with ``#`` are skipped. The images are taken in the split's order whatever the file's
order, so the same set of images is the same selection (and the same unit keys); an entry given
twice is refused, as is the first entry that the split lacks, each in one line naming it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ellrobust.core.errors import UsageError, quote


@dataclass(frozen=True)
class IndexList:
    """The images an ``--indices`` file names: its path, the sha256 of its bytes, and the dataset indices (sorted)."""

    path: str
    sha256: str
    indices: tuple[int, ...]

    def record(self) -> dict:
        """What run.json records of the file (``dataset.indices_file``)."""
        return {"path": self.path, "sha256": self.sha256, "images": len(self.indices)}


def read_index_file(path: str | os.PathLike, dataset: Dataset) -> IndexList:
    """The dataset indices that the ``--indices`` file at ``path`` names (module docstring)."""
    path = Path(path).expanduser()
    flag = f"--indices {quote(path)}"
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{flag} cannot be read ({exc}); pass a text file, one index or path a line.") from None
    by_path: dict[str, int] | None = None
    seen: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.isascii() and entry.isdigit():  # not "²", which isdigit() takes and int() refuses
            index = int(entry)
            if index >= len(dataset):
                raise UsageError(
                    f"{flag} line {number}: index {index} is beyond the split's {len(dataset)} images "
                    f"(0 to {len(dataset) - 1}); list images of this split."
                )
        else:
            if getattr(dataset, "samples", None) is None:
                raise UsageError(
                    f"{flag} line {number}: {quote(entry)} is not an index (0, 1, …), and this dataset is not "
                    "read from files; list its images by index."
                )
            if by_path is None:
                by_path = relative_paths(dataset, flag)
            index = by_path.get(_normal(entry), -1)
            if index < 0:
                root = str(getattr(dataset, "root", ""))
                raise UsageError(
                    f"{flag} line {number}: {quote(entry)} is not an image of {quote(root)}; "
                    "paths are relative to the split folder (<class>/<file>)."
                )
        if index in seen:
            raise UsageError(
                f"{flag} lists image {quote(entry)} twice (lines {seen[index]} and {number}); list each image once."
            )
        seen[index] = number
    if not seen:
        raise UsageError(f"{flag} lists no image; write one dataset index or relative path a line.")
    return IndexList(str(path), hashlib.sha256(raw).hexdigest(), tuple(sorted(seen)))


def relative_paths(dataset: Dataset, flag: str = "--indices") -> dict[str, int]:
    """An image folder's files, each by its path relative to the split folder (``/``-separated), to its index."""
    samples = getattr(dataset, "samples", None)
    root = getattr(dataset, "root", None)
    if samples is None or root is None:
        raise UsageError(
            f"{flag} names a file, but this dataset is not read from files; list its images by index (0, 1, …)."
        )
    prefix = os.path.join(str(root), "")
    out = {}
    for index, (file, _) in enumerate(samples):
        rel = file[len(prefix) :] if file.startswith(prefix) else os.path.relpath(file, root)
        out[_normal(rel)] = index
    return out


def _normal(path: str) -> str:
    """A relative path as the file and the index compare it: ``/`` between folders, no leading ``./``."""
    path = path.replace(os.sep, "/").replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path
