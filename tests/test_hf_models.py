"""``hf:DIR``: transformers' ViT and DeiT folders as ellrobust's ViT, and their elliptical twins.

Every folder is written by transformers' own ``save_pretrained`` in the test, from a tiny config with
random weights: nothing is downloaded. ellrobust reads it without transformers; the reference logits
are transformers' forward pass on the images its own preprocessing would give (normalised).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

from ellrobust.cli import app  # noqa: E402
from ellrobust.core.errors import CheckpointError  # noqa: E402
from ellrobust.models import load_model  # noqa: E402
from ellrobust.models.checkpoint import save_safetensors  # noqa: E402

TINY = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 3,
    "intermediate_size": 96,
    "num_labels": 10,
}
CLASSES = {
    "vit": (transformers.ViTConfig, transformers.ViTForImageClassification),
    "deit": (transformers.DeiTConfig, transformers.DeiTForImageClassification),
    "deit-teacher": (transformers.DeiTConfig, transformers.DeiTForImageClassificationWithTeacher),
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _folder(path, kind: str, *, seed: int = 0, **config) -> torch.nn.Module:
    """A transformers model with random weights (every parameter perturbed), saved in ``path``."""
    config_cls, model_cls = CLASSES[kind]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**TINY, **config})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(str(path))
    return model


def _reference(model: torch.nn.Module, images: torch.Tensor, mean, std) -> torch.Tensor:
    normalised = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(pixel_values=normalised).logits


def _edit_config(folder, **fields) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize("kind", list(CLASSES))
def test_hf_logits_equal_transformers_forward(tmp_path, kind):
    reference = _folder(tmp_path, kind)
    images = torch.rand(6, 3, 32, 32)
    ours = load_model(f"hf:{tmp_path}")
    with torch.no_grad():
        logits = ours(images)
    expected = _reference(reference, images, *IMAGENET)
    assert logits.shape == (6, 10) and torch.allclose(logits, expected, atol=1e-5, rtol=0)
    assert not ours.is_elliptical and ours.cfg.norm_eps == 1e-12
    assert ours.cfg.distilled is (kind != "vit") and ours.cfg.dist_head is (kind != "deit")


def test_deit_with_teacher_averages_the_class_and_distillation_heads(tmp_path):
    reference = _folder(tmp_path, "deit-teacher")
    images = torch.rand(4, 3, 32, 32)
    ours = load_model(f"hf:{tmp_path}")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    with torch.no_grad():
        out = reference(pixel_values=(images - mean) / std)
        tokens = ours.norm(list(ours.iter_blocks(images))[-1].x)
        assert torch.allclose(ours.head(tokens[:, 0]), out.cls_logits, atol=1e-5, rtol=0)
        assert torch.allclose(ours.head_dist(tokens[:, 1]), out.distillation_logits, atol=1e-5, rtol=0)
    assert not torch.allclose(out.cls_logits, out.logits, atol=1e-3)  # the distillation head moves the logits


def test_hf_takes_the_preprocessor_normalisation_no_qkv_bias_and_a_bin_file(tmp_path):
    reference = _folder(tmp_path, "vit", qkv_bias=False, layer_norm_eps=1e-5)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    transformers.ViTImageProcessor(image_mean=list(mean), image_std=list(std)).save_pretrained(str(tmp_path))
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")  # the saved layout
    (tmp_path / "model.safetensors").unlink()
    images = torch.rand(4, 3, 32, 32)
    ours = load_model(f"hf:{tmp_path}")
    with torch.no_grad():
        assert torch.allclose(ours(images), _reference(reference, images, mean, std), atol=1e-5, rtol=0)
    overridden = load_model(f"hf:{tmp_path}", mean=IMAGENET[0], std=IMAGENET[1])
    with torch.no_grad():
        assert torch.allclose(overridden(images), _reference(reference, images, *IMAGENET), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["vit", "deit-teacher"])
def test_the_elliptical_twin_of_an_hf_folder_is_vit_elliptical_of_the_same_weights(tmp_path, kind):
    folder = tmp_path / "hf"
    _folder(folder, kind)
    plain = load_model(f"hf:{folder}")
    timm_layout = save_safetensors(
        plain.state_dict(), tmp_path / "timm.safetensors", {k: v for k, v in plain.describe().items() if k != "library"}
    )
    twin = load_model("vit-elliptical", checkpoint=folder)
    expected = load_model("vit-elliptical", checkpoint=timm_layout)
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        logits, baseline = twin(images), plain(images)
        assert torch.equal(logits, expected(images))
    assert twin.is_elliptical and twin.cfg.elliptical_layers == (1, 2)
    assert not torch.allclose(logits, baseline, atol=1e-4)  # the twin is not the baseline again


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_act", "gelu_new"),
        ("image_size", 36),
        ("num_channels", 1),
        ("num_attention_heads", 5),
        ("architectures", ["ViTForMaskedImageModeling"]),
    ],
)
def test_unsupported_configurations_are_refused_naming_the_field(tmp_path, field, value):
    _folder(tmp_path, "vit")
    _edit_config(tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=f"config.json's {field} ") as info:
        load_model(f"hf:{tmp_path}")
    assert "\n" not in str(info.value)


def test_weights_that_do_not_fit_the_config_are_refused_naming_the_keys(tmp_path):
    _folder(tmp_path, "vit")
    _edit_config(tmp_path, num_hidden_layers=2)
    with pytest.raises(CheckpointError, match=r"unexpected keys: vit\.encoder\.layer\.2\."):
        load_model(f"hf:{tmp_path}")


def test_hf_and_its_twin_through_the_cli(runner, tmp_path):
    folder = tmp_path / "hf"
    _folder(folder, "deit-teacher")
    out = tmp_path / "run"
    args = ["eval", "-m", f"hf:{folder}", "-m", "vit-elliptical", "-c", "-", "-c", str(folder)]
    result = runner.invoke(app, [*args, "--data", "synthetic", "-n", "8", "--attack", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    models = json.loads((out / "run.json").read_text())["models"]
    assert models[f"hf:{folder}"]["weights"] == str(folder) and not models[f"hf:{folder}"]["elliptical"]
    assert models["vit-elliptical"]["elliptical"]
    assert models[f"hf:{folder}"]["checkpoint"] == models["vit-elliptical"]["checkpoint"]  # the same weights


def test_an_hf_refusal_is_one_line_through_the_cli(runner, tmp_path):
    _folder(tmp_path / "hf", "vit")
    _edit_config(tmp_path / "hf", hidden_act="relu")
    result = runner.invoke(app, ["eval", "-m", f"hf:{tmp_path / 'hf'}", "--data", "synthetic", "-n", "8"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and "hidden_act" in lines[0]
