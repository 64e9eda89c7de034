"""``robustbench:DATASET/THREAT/NAME``: a RobustBench zoo entry read from ``--model-dir``, nothing downloaded.

The test fills a model_dir with one entry's architecture (built by the robustbench package) and random
weights, saved the way RobustBench's files are (a ``state_dict`` under DataParallel's ``module.``,
without the normalisation constants the architecture sets itself), and compares ellrobust's clean
accuracy with the module's own forward pass on the same images.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("robustbench.model_zoo")

from robustbench.model_zoo.cifar10 import Wong2020FastNet  # noqa: E402

import ellrobust  # noqa: E402
from ellrobust.cli import app  # noqa: E402
from ellrobust.core.errors import UsageError  # noqa: E402
from ellrobust.data import load_dataset  # noqa: E402
from ellrobust.models import load_model  # noqa: E402

NAME = "robustbench:cifar10/Linf/Wong2020Fast"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """``model_dir/cifar10/Linf/Wong2020Fast.pt`` with random weights, and the module they came from."""
    torch.manual_seed(0)
    net = Wong2020FastNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("models")
    (root / "cifar10" / "Linf").mkdir(parents=True)
    state = {f"module.{k}": v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}
    torch.save({"state_dict": state}, root / "cifar10" / "Linf" / "Wong2020Fast.pt")
    return root, net


def test_the_zoo_model_keeps_its_own_normalisation(model_dir):
    root, net = model_dir
    model = load_model(NAME, model_dir=root)
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images), net(images))
    assert model.input_size == 32 and model.describe()["class"] == "Wong2020FastNet"


@pytest.mark.slow
def test_clean_accuracy_equals_the_modules_own_forward_pass(model_dir, tmp_path):
    root, net = model_dir
    results = ellrobust.evaluate([NAME], model_dir=root, data="synthetic", attacks="none", out=tmp_path / "run")
    clean = results.table[results.table.metric == "clean_accuracy"].value.item()
    data = load_dataset("synthetic")
    images, labels = (torch.stack([data.dataset[i][j] for i in range(len(data.dataset))]) for j in (0, 1))
    with torch.no_grad():
        expected = (net(images).argmax(1) == labels).float().mean().item()
    assert clean == pytest.approx(expected, abs=1e-12) and len(images) == 64
    weights = json.loads((tmp_path / "run" / "run.json").read_text())["models"][NAME]["weights"]
    assert weights == str(root / "cifar10" / "Linf" / "Wong2020Fast.pt")


def test_a_missing_file_is_one_line_naming_the_expected_path(runner, tmp_path):
    result = runner.invoke(app, ["eval", "-m", NAME, "--model-dir", str(tmp_path), "--data", "synthetic", "-n", "8"])
    expected = tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt"
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and str(expected) in lines[0]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cifar10/Linf", "is not DATASET/THREAT/NAME"),
        ("mnist/Linf/Standard", "dataset 'mnist' is unknown"),
        ("cifar10/Linf/Wong2020Fats", "Did you mean Wong2020Fast"),
    ],
)
def test_bad_names_are_refused(model_dir, name, message):
    root, _ = model_dir
    (root / "cifar10" / "Linf" / "Wong2020Fats.pt").write_bytes(b"")
    with pytest.raises(UsageError, match=message):
        load_model(f"robustbench:{name}", model_dir=root)


def test_normalising_again_is_refused(model_dir):
    with pytest.raises(UsageError, match="--mean/--std does not apply"):
        load_model(NAME, model_dir=model_dir[0], mean=(0.5,) * 3, std=(0.5,) * 3)
