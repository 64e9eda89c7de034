"""Dataset registry: the embedded default, on-disk layouts, seeded selection, clear errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ellrobust.data import DATASETS, load_dataset, select_indices
from ellrobust.errors import UsageError


def test_digits_is_embedded_fixed_and_in_unit_range():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    x, y = test.dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert test.num_classes == 10 and 0 <= int(y) < 10
    assert load_dataset("digits").digest == test.digest != train.digest


def test_selection_is_seeded_and_shared():
    assert select_indices(360, 50, seed=0) == select_indices(360, 50, seed=0)
    assert select_indices(360, 50, seed=0) != select_indices(360, 50, seed=1)
    assert select_indices(10, None, seed=0) == list(range(10))
    with pytest.raises(UsageError):
        select_indices(10, 0, seed=0)


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if not s.needs_root])
def test_every_embedded_dataset_yields_unit_range_images(name):
    data = load_dataset(name)
    x, _ = data.dataset[len(data) - 1]
    assert x.shape == (3, data.spec.image_size, data.spec.image_size)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if s.needs_root])
def test_datasets_on_disk_need_an_existing_root(name, tmp_path):
    with pytest.raises(UsageError, match="--data-root"):
        load_dataset(name)
    with pytest.raises(UsageError, match="not a folder"):
        load_dataset(name, root=tmp_path / "missing")


def test_cifar10_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="no CIFAR-10 found"):
        load_dataset("cifar10", root=tmp_path)


def test_imagefolder_uses_deit_eval_transform(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (300, 260), color=(200, 10, 10)).save(tmp_path / "val" / wnid / "a.JPEG")
    data = load_dataset("imagefolder", root=tmp_path)
    assert data.num_classes == 2 and len(data) == 2
    x, y = data.dataset[1]
    assert x.shape == (3, 224, 224) and y == 1
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_imagefolder_at_another_img_size_is_other_data(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (300, 260), color=(20, 200, 10)).save(tmp_path / wnid / "a.JPEG")
    default, small = load_dataset("imagefolder", root=tmp_path), load_dataset("imagefolder", root=tmp_path, image_size=64)
    assert small.dataset[0][0].shape == (3, 64, 64) and small.spec.image_size == 64 and default.spec.image_size == 224
    assert small.digest != default.digest == load_dataset("imagefolder", root=tmp_path, image_size=224).digest
    with pytest.raises(UsageError, match="'digits' has 32 px images"):
        load_dataset("digits", image_size=64)
    assert load_dataset("digits", image_size=32).digest == load_dataset("digits").digest


def test_unknown_dataset_lists_choices():
    with pytest.raises(UsageError, match="Choices: digits"):
        load_dataset("cifar")
