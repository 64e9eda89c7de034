"""Natural distribution shifts (ImageNet-R/-A/-Sketch/V2), --class-map, the numeric-folder warning, --indices.

Every dataset is a tmp_path folder of a few 20 px PNGs, evaluated at --img-size 16 by tiny models.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

import ellrobust
from ellrobust.cli import app
from ellrobust.core.errors import DataWarning, UsageError
from ellrobust.data import load_dataset
from ellrobust.data.shifts import class_list, indices_in_1k

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--img-size", "16", "--workers", "0", "--attack", "none", "--no-sanity"]


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _layout(root: Path, folders: list[str], filled: dict[str, int]) -> Path:
    """Every folder of ``folders`` (empty), and ``filled[name]`` images in some of them."""
    for name in folders:
        (root / name).mkdir(parents=True, exist_ok=True)
    seed = 0
    for name, count in filled.items():
        for k in range(count):
            _png(root / name / f"img{k}.png", seed)
            seed += 1
    return root


class Net1000(nn.Module):
    """A seeded 1000-class linear model whose classes outside ``favoured`` win the full argmax by far."""

    def __init__(self, outputs: int = 1000, favoured: tuple[int, ...] = ()) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 4 * 4, outputs)
        with torch.no_grad():
            self.fc.bias.fill_(50.0)
            self.fc.bias[list(favoured)] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


# --- class lists --------------------------------------------------------------------------------------------


def test_shipped_class_lists_and_their_positions_among_imagenet_1k():
    wnids = class_list("imagenet_1k")
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids) and len(set(wnids)) == 1000
    for name in ("imagenet_r", "imagenet_a"):
        assert len(class_list(name)) == 200 and list(class_list(name)) == sorted(class_list(name))
    r, a = indices_in_1k("imagenet_r"), indices_in_1k("imagenet_a")
    assert r[:8] == (1, 2, 4, 6, 8, 9, 11, 13)  # Hendrycks' eval.py lists these first
    assert a[:6] == (6, 11, 13, 15, 17, 22)  # thousand_k_to_200 of natural-adv-examples
    assert [wnids[i] for i in r] == list(class_list("imagenet_r"))
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "classes/*.txt" in package_data["ellrobust.data"]


# --- ImageNet-R / -A: the 1000-class model masked to the 200 classes ------------------------------------------


def _imagenet_r(tmp_path: Path) -> Path:
    wnids = list(class_list("imagenet_r"))
    return _layout(tmp_path / "imagenet-r", wnids, {wnids[0]: 2, wnids[7]: 2, wnids[199]: 2})


def test_imagenet_r_masks_a_1000_class_model_to_its_200_classes(tmp_path):
    root = _imagenet_r(tmp_path)
    kept = indices_in_1k("imagenet_r")
    net = Net1000(favoured=kept)
    results = ellrobust.evaluate(
        {"net": net}, data="imagenet-r", data_root=tmp_path, image_size=16, attacks=["fgsm"], eps=8 / 255,
        workers=0, sanity=False, out=tmp_path / "run",
    )  # fmt: skip
    data = load_dataset("imagenet-r", root=tmp_path, image_size=16)
    assert data.dataset.root == root  # <root>/imagenet-r, the released archive's folder
    images = torch.stack([data.dataset[i][0] for i in range(len(data))])
    with torch.no_grad():
        logits = net(images)
    expected = logits[:, list(kept)].argmax(1).tolist()
    assert all(p >= 200 for p in logits.argmax(1).tolist())  # unmasked, the model would never predict one of them
    clean = results.examples[results.examples["method"].eq("clean")]
    assert clean["prediction"].tolist() == expected
    attacked = results.examples[results.examples["method"].eq("fgsm")]
    assert attacked["prediction"].between(0, 199).all()  # the attack saw the masked model
    run = json.loads((results.run_dir / "run.json").read_text())
    assert run["dataset"]["num_classes"] == 200
    assert run["dataset"]["class_indices_1k"] == {"indices": list(kept), "masked_models": ["net"]}
    assert run["models"]["net"]["config"]["logits_kept"] == list(kept)


def test_a_200_class_model_is_used_unmasked_and_another_count_is_refused(tmp_path):
    _imagenet_r(tmp_path)
    results = ellrobust.evaluate(
        {"net": Net1000(outputs=200)}, data="imagenet-r", data_root=tmp_path, image_size=16, attacks="none",
        workers=0, out=tmp_path / "run",
    )  # fmt: skip
    assert "logits_kept" not in results.models["net"]["config"]
    with pytest.raises(UsageError, match=r"returns \(1, 37\).*neither \(1, 1000\).*nor \(1, 200\)"):
        ellrobust.evaluate(
            {"net": Net1000(outputs=37)}, data="imagenet-r", data_root=tmp_path, image_size=16, attacks="none",
            workers=0, out=tmp_path / "run2",
        )  # fmt: skip


def test_a_folder_that_is_not_the_datasets_is_refused_in_one_line(tmp_path, runner):
    a_wnids = list(class_list("imagenet_a"))
    _layout(tmp_path / "a", a_wnids, {a_wnids[0]: 1})
    assert len(load_dataset("imagenet-a", root=tmp_path / "a", image_size=16)) == 1
    r_only = sorted(set(class_list("imagenet_r")) - set(a_wnids))[0]
    (tmp_path / "a" / r_only).mkdir()
    result = runner.invoke(app, ["eval", "-m", "deit-nano", "--data", "imagenet-a", "--data-root", str(tmp_path / "a")])
    assert result.exit_code == 2
    assert f"class folder {r_only!r}" in result.output and "not in the 200 ImageNet-A class folders" in result.output
    (tmp_path / "a" / r_only).rmdir()
    (tmp_path / "a" / a_wnids[5]).rmdir()
    with pytest.raises(UsageError, match=f"no class folder '{a_wnids[5]}' of the 200 ImageNet-A class folders"):
        load_dataset("imagenet-a", root=tmp_path / "a", image_size=16)


# --- ImageNetV2: numeric folders, numeric labels; the warning; --class-map -----------------------------------


def test_imagenet_v2_labels_are_the_folder_numbers(tmp_path):
    _layout(tmp_path, [str(i) for i in range(1000)], {"2": 1, "10": 1, "100": 1, "999": 1})
    data = load_dataset("imagenet-v2", root=tmp_path, image_size=16)
    labels = {Path(path).parent.name: label for path, label in data.dataset.samples}
    assert labels == {"2": 2, "10": 10, "100": 100, "999": 999}
    assert data.num_classes == 1000
    sketch = _layout(tmp_path / "s" / "sketch", list(class_list("imagenet_1k")), {"n01443537": 1})
    data = load_dataset("imagenet-sketch", root=tmp_path / "s", image_size=16)
    assert data.dataset.root == sketch and data.dataset.samples[0][1] == 1  # ImageNet's label of n01443537


def _numbered(tmp_path: Path) -> Path:
    return _layout(tmp_path / "v2", [str(i) for i in range(12)], {"2": 1, "10": 1})


def test_numbered_folders_sorted_as_text_warn_in_one_line(tmp_path, runner):
    root = _numbered(tmp_path)
    with pytest.warns(DataWarning, match=r"folder '10' gets label 2.*--data imagenet-v2.*--class-map"):
        data = load_dataset("imagefolder", root=root, image_size=16)
    assert {Path(p).parent.name: y for p, y in data.dataset.samples} == {"10": 2, "2": 4}  # text order: the trap
    result = runner.invoke(app, ["eval", "-m", "deit-nano", "--data", "imagefolder", "--data-root", str(root), *FAST])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "warning:" in line]
    assert len(lines) == 1 and "--data imagenet-v2" in lines[0] and "--class-map" in lines[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # 0 … 9 sort the same as text and as numbers: no warning
        load_dataset("imagefolder", root=_layout(tmp_path / "ten", [str(i) for i in range(10)], {"3": 1}))


def test_class_map_numbers_the_folders_as_the_file_lists_them(tmp_path):
    root = _numbered(tmp_path)
    class_map = tmp_path / "map.txt"
    class_map.write_text("".join(f"{i}\n" for i in range(12)) + "12\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        data = load_dataset("imagefolder", root=root, image_size=16, class_map=class_map)
    assert {Path(p).parent.name: y for p, y in data.dataset.samples} == {"10": 10, "2": 2}
    assert data.num_classes == 13  # the map's lines, also a class without a folder
    with pytest.warns(DataWarning):
        plain = load_dataset("imagefolder", root=_numbered(tmp_path / "again"), image_size=16)
    assert data.digest != plain.digest  # other labels, other data
    class_map.write_text("0\n1\n2\n")
    with pytest.raises(UsageError, match="class folder '10'.*not in --class-map"):
        load_dataset("imagefolder", root=root, class_map=class_map)
    with pytest.raises(UsageError, match="--class-map applies to datasets whose classes come from the folder"):
        load_dataset("imagenet-v2", root=root, class_map=class_map)


# --- --indices -------------------------------------------------------------------------------------------------


def _val(tmp_path: Path) -> Path:
    """ImageNet's layout; the first file name is one of RobustBench's imagenet_test_image_ids.txt."""
    root = tmp_path / "imagenet" / "val"
    for k, (wnid, file) in enumerate(
        [("n01440764", "ILSVRC2012_val_00000293.JPEG"), ("n01440764", "b.png"), ("n01443537", "c.png"),
         ("n01443537", "d.png"), ("n01484850", "e.png")]
    ):  # fmt: skip
        _png(root / wnid / file, k)
    return root


def test_indices_by_index_and_by_path_are_recorded_in_run_json(tmp_path, runner):
    _val(tmp_path)
    listed = tmp_path / "ids.txt"
    listed.write_text("# RobustBench's format: paths relative to val/\n\nn01484850/e.png\n1\n"
                      "n01440764/ILSVRC2012_val_00000293.JPEG\n")  # fmt: skip
    args = ["eval", "-m", "deit-nano", "--data", "imagefolder", "--data-root", str(tmp_path / "imagenet"), *FAST]
    result = runner.invoke(app, [*args, "--indices", str(listed), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["dataset"]["n"] == 3
    digest = hashlib.sha256(listed.read_bytes()).hexdigest()
    assert run["dataset"]["indices_file"] == {"path": str(listed), "sha256": digest, "images": 3}
    examples = pd.read_csv(tmp_path / "run" / "examples.csv.gz")
    assert examples["index"].tolist() == [0, 1, 4]  # the split's order, whatever the file's
    result = runner.invoke(app, [*args, "--indices", str(listed), "--n", "2", "--out", str(tmp_path / "run2")])
    assert result.exit_code == 0, result.output
    picked = json.loads((tmp_path / "run2" / "run.json").read_text())["dataset"]["n"]
    assert picked == 2  # --n: the seeded 2 of the 3 listed images


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ("0\nn01440764/missing.JPEG\nn01443537/zz.png\n", "line 2: 'n01440764/missing.JPEG' is not an image of"),
        ("0\n5\n", "line 2: index 5 is beyond the split's 5 images (0 to 4)"),
        ("1\nn01440764/b.png\n", "lists image 'n01440764/b.png' twice (lines 1 and 2)"),
        ("# nothing\n\n", "lists no image"),
    ],
)
def test_indices_refuses_what_the_folder_lacks_in_one_line(tmp_path, runner, lines, fragment):
    _val(tmp_path)
    listed = tmp_path / "ids.txt"
    listed.write_text(lines)
    args = ["eval", "-m", "deit-nano", "--data", "imagefolder", "--data-root", str(tmp_path / "imagenet"), *FAST]
    result = runner.invoke(app, [*args, "--indices", str(listed), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and fragment in result.output, result.output
