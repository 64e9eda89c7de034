"""ImageNet's natural distribution shifts, read from local folders: ImageNet-R, -A, -Sketch and -V2.

Each is an image folder with a fixed class list, shipped in ``classes/`` (its label is a folder's
position in the list), so a folder that is not the dataset's is refused with one line instead of
being silently mislabelled:

* **ImageNet-R** and **ImageNet-A**: 200 ImageNet classes each, folders named by wnid, labels in
  sorted wnid order (torchvision's ``ImageFolder`` order, as the reference code reads them). A
  1000-class ImageNet model is evaluated on the logits of those 200 classes
  (:mod:`ellrobust.models.masked`); :func:`indices_in_1k` gives their positions among ImageNet-1k's.
* **ImageNet-Sketch**: the 1000 ImageNet wnid folders, labels as ImageNet's (sorted wnids).
* **ImageNetV2**: folders ``0`` … ``999`` whose names *are* the labels, in numeric order; sorted
  as text (what a plain image folder does) folder ``10`` would get label 2.

The class lists (``classes/``): ``imagenet_1k.txt`` (ImageNet-1k's 1000 wnids, sorted) and
``imagenet_r.txt`` come from ``all_wnids`` and ``imagenet_r_wnids`` of ``eval.py`` in
github.com/hendrycks/imagenet-r (MIT License, Copyright (c) 2020 Dan Hendrycks);
``imagenet_a.txt`` is ``indices_in_1k`` of ``eval.py`` in github.com/hendrycks/natural-adv-examples
(MIT License, Copyright (c) 2019 Dan Hendrycks) read through ``imagenet_1k.txt``. timm's
``imagenet_r_synsets.txt`` and ``imagenet_a_synsets.txt`` are the same lists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch.utils.data import Dataset

from ellrobust.data.imagefolder import ImageFolderDataset


@functools.cache
def class_list(name: str) -> tuple[str, ...]:
    """A shipped class list (``classes/<name>.txt``): one folder name per line, in label order."""
    text = (resources.files("ellrobust.data") / "classes" / f"{name}.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@functools.cache
def indices_in_1k(name: str) -> tuple[int, ...]:
    """The positions of a shipped wnid list's classes among ImageNet-1k's 1000 sorted wnids, in its order."""
    position = {wnid: i for i, wnid in enumerate(class_list("imagenet_1k"))}
    return tuple(position[wnid] for wnid in class_list(name))


@dataclass(frozen=True)
class ShiftLayout:
    """How a shift dataset is laid out on disk.

    Attributes:
        title: the dataset's name in messages ("ImageNet-R").
        classes: the class folders' names, in label order.
        release_folder: the folder its archive unpacks to: used when ``--data-root`` holds it.
    """

    title: str
    classes: Callable[[], tuple[str, ...]]
    release_folder: str

    def build(self, split: str, root: Path, image_size: int) -> Dataset:
        """The registry's builder of the dataset's one split: ``<root>/<release_folder>`` when it
        exists, else ``root`` itself."""
        folder = root / self.release_folder if (root / self.release_folder).is_dir() else root
        names = self.classes()
        what = f"the {len(names)} {self.title} class folders"
        return ImageFolderDataset(folder, image_size, names, complete=True, what=what)


def numbered_classes() -> tuple[str, ...]:
    """ImageNetV2's class folders: ``0`` … ``999``, each its own label."""
    return tuple(str(i) for i in range(1000))


IMAGENET_R = ShiftLayout("ImageNet-R", functools.partial(class_list, "imagenet_r"), "imagenet-r")
IMAGENET_A = ShiftLayout("ImageNet-A", functools.partial(class_list, "imagenet_a"), "imagenet-a")
IMAGENET_SKETCH = ShiftLayout("ImageNet-Sketch", functools.partial(class_list, "imagenet_1k"), "sketch")
IMAGENET_V2 = ShiftLayout("ImageNetV2", numbered_classes, "imagenetv2-matched-frequency-format-val")
