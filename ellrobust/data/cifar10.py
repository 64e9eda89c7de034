"""CIFAR-10 read from a local folder in torchvision's format; ellrobust never downloads it."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ellrobust.core.errors import UsageError


def build_cifar10(split: str, root: Path | None) -> Dataset:
    """torchvision's CIFAR-10 with ``download=False``: a missing folder is a one-line error saying what to copy."""
    from torchvision import datasets, transforms

    try:
        return datasets.CIFAR10(str(root), train=split == "train", download=False, transform=transforms.ToTensor())
    except RuntimeError:
        raise UsageError(
            f"no CIFAR-10 found under {str(root)!r}: expected torchvision's format "
            "(<root>/cifar-10-batches-py/data_batch_1 …); download it elsewhere and copy it there."
        ) from None
