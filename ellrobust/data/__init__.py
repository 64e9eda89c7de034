"""Floor 3: datasets. Every dataset yields ``(image, label)`` with float CHW images in [0, 1].

Nothing here downloads: the default (scikit-learn's digits) ships inside the scikit-learn wheel, and
every other dataset is read from a local ``--data-root``. The registry and loading are
:mod:`.registry`, one module per dataset (:mod:`.digits`, :mod:`.synthetic`, :mod:`.cifar10`,
:mod:`.imagefolder`, ImageNet's shifts :mod:`.shifts`, ImageNet-O :mod:`.imagenet_o`), decoding files
:mod:`.images`, DeiT's geometry :mod:`.transforms`, ``--indices`` :mod:`.selection`, and the run's decoded images
:mod:`.store`; this file only re-exports them.
"""

from ellrobust.data.datasets import DATASETS, DatasetSpec, LoadedDataset, dataset_digest, load_dataset, select_indices
from ellrobust.data.imagefolder import IMAGE_EXTENSIONS, ImageFolderDataset
from ellrobust.data.images import image_pixel_limit, read_rgb
from ellrobust.data.transforms import deit_eval_transform, deit_resize_crop

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "DatasetSpec",
    "ImageFolderDataset",
    "LoadedDataset",
    "dataset_digest",
    "deit_eval_transform",
    "deit_resize_crop",
    "image_pixel_limit",
    "load_dataset",
    "read_rgb",
    "select_indices",
]
