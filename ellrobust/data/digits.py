"""The embedded default: scikit-learn's 8×8 handwritten digits, which ship inside its wheel.

No download and no ``--data-root``: the tests, the shipped checkpoints and the quick start all run
on these 1797 images, up-sampled to 32×32 RGB so that they fit the same ViTs as CIFAR-10.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

#: The seed of the fixed stratified 80/20 split: the shipped checkpoints were trained on its train part.
DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_tensors() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Every image, label and train flag, built once per process (both splits share the work)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()  # (1797, 3, 32, 32) RGB
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx = np.arange(len(labels))
    train_idx, _ = train_test_split(idx, test_size=0.2, random_state=DIGITS_SPLIT_SEED, stratify=digits.target)
    is_train = np.zeros(len(labels), dtype=bool)
    is_train[train_idx] = True
    return images, labels, is_train


def build_digits(split: str, root: Path | None) -> Dataset:
    """The ``train`` or ``test`` split as an in-memory tensor dataset (``root`` is unused: embedded)."""
    images, labels, is_train = _digits_tensors()
    mask = torch.from_numpy(is_train if split == "train" else ~is_train)
    return TensorDataset(images[mask], labels[mask])
