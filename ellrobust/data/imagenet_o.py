"""ImageNet-O (Hendrycks et al. 2021): out-of-distribution images beside ImageNet validation images.

The protocol is that of ``hendrycks/natural-adv-examples`` (``eval_many_models.py``), which the
Elliptical-Attention paper's ``eval_OOD.py`` repeats: the in-distribution images are the ImageNet
validation images of ImageNet-O's 200 classes (``class_list("imagenet_o")``, 10 000 images), the
out-of-distribution images are ImageNet-O's 2 000, and each image is scored by its maximum softmax
probability over the 200 logits of those classes (:attr:`ImageNetOFolder.score_classes`).

Both sets are read from one ``--data-root`` (never downloaded), under fixed names, so that a run
needs no option beyond those of an image folder; links are fine::

    <root>/imagenet-o/<wnid>/*.jpg    the ImageNet-O release as unpacked
    <root>/val/<wnid>/*.JPEG          ImageNet's validation images in class folders (all 1000)

The class list ``classes/imagenet_o.txt`` (one wnid a line, in ImageNet's sorted order, like the
other shipped lists) is ``imagenet_o_wnids`` of ``eval_many_models.py`` in
github.com/hendrycks/natural-adv-examples (MIT License, Copyright (c) 2019 Dan Hendrycks).

The dataset lists the in-distribution images first, then the OOD ones; :attr:`ImageNetOFolder.ood`
flags the latter. Labels are indices into the validation folder's sorted class folders (ImageNet's
1000-class numbering), so the in-distribution images also give the usual clean accuracy; an OOD
image has no class and its label is -1. :func:`split_ood` cuts a run's selection into the two sets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ellrobust.core.errors import UsageError
from ellrobust.data.imagefolder import ImageFiles, ImageFolderDataset
from ellrobust.data.shifts import class_list

#: The folders ``--data-root`` holds for ``imagenet-o``: the OOD images and the in-distribution ones.
OOD_FOLDER = "imagenet-o"
ID_FOLDER = "val"
#: An OOD image's label: it belongs to no class of the model.
NO_CLASS = -1


class ImageNetOFolder(ImageFiles):
    """The in-distribution images of ImageNet-O's classes, then the ImageNet-O images, decoded alike.

    Attributes:
        classes: the validation folder's class folders (the models' classes, ImageNet's numbering).
        samples: ``(path, label)`` per image, in-distribution first.
        ood: one flag per image, True for an ImageNet-O image.
        score_classes: the positions among ``classes`` of ImageNet-O's 200 classes: the logits whose
            softmax gives the maximum softmax probability.
        digest: both folders' digests together.
    """

    def __init__(self, root: Path, image_size: int = 224) -> None:
        folders = {name: root / name for name in (ID_FOLDER, OOD_FOLDER)}
        for name, folder in folders.items():
            if not folder.is_dir():
                what = "ImageNet's validation images" if name == ID_FOLDER else "the ImageNet-O release"
                raise UsageError(
                    f"--data-root {str(root)!r} has no {name}/ folder ({what}); imagenet-o reads "
                    f"<root>/{ID_FOLDER}/<wnid>/*.JPEG and <root>/{OOD_FOLDER}/<wnid>/*.jpg (links are fine)."
                )
        wanted = class_list("imagenet_o")
        validation = ImageFolderDataset(folders[ID_FOLDER], image_size)
        missing = [wnid for wnid in wanted if wnid not in validation.classes]
        if missing:
            raise UsageError(
                f"{str(folders[ID_FOLDER])!r} has no class folder for {len(missing)} of ImageNet-O's 200 classes "
                f"(e.g. {missing[0]}); link ImageNet's validation folder, with its 1000 class folders."
            )
        self.classes = validation.classes
        self.score_classes = tuple(self.classes.index(wnid) for wnid in wanted)
        scored = set(self.score_classes)
        in_dist = [(path, label) for path, label in validation.samples if label in scored]
        if not in_dist:
            raise UsageError(
                f"{str(folders[ID_FOLDER])!r} holds no image of ImageNet-O's 200 classes; "
                "link ImageNet's validation folder."
            )
        outside = ImageFolderDataset(folders[OOD_FOLDER], image_size)
        self.samples = in_dist + [(path, NO_CLASS) for path, _ in outside.samples]
        self.targets = [label for _, label in self.samples]
        self.ood = np.r_[np.zeros(len(in_dist), dtype=bool), np.ones(len(outside.samples), dtype=bool)]
        self.transform = validation.transform
        h = hashlib.sha256(f"imagenet-o\n{validation.digest}\n{outside.digest}\n".encode())
        self.digest = h.hexdigest()[:12]


def build_imagenet_o(split: str, root: Path | None, image_size: int) -> Dataset:
    """The one split (``val``): ImageNet-O against the validation images of its classes."""
    return ImageNetOFolder(root, image_size)


def split_ood(dataset: Dataset, selection: list[int]) -> tuple[list[int], list[int]]:
    """A run's selection cut into (in-distribution, out-of-distribution) dataset indices, each in order.

    A dataset without OOD images keeps its whole selection (and no OOD images). A selection of a
    dataset with OOD images must hold both kinds (``--n`` samples from both together).
    """
    flags = getattr(dataset, "ood", None)
    if flags is None:
        return list(selection), []
    inside, outside = [i for i in selection if not flags[i]], [i for i in selection if flags[i]]
    if not inside or not outside:
        kind = "in-distribution" if not inside else "out-of-distribution"
        raise UsageError(f"the {len(selection)} selected images hold no {kind} image; raise --n or leave it out.")
    return inside, outside
