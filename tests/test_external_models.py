"""Bring your own model: timm and torchvision classifiers, ViTs inferred from checkpoints, elliptical twins.

Every model here is built from timm or torchvision in the test, with random weights saved to a
temporary file: nothing is downloaded.
"""

from __future__ import annotations

import json
import sys

import pytest
import timm
import torch
import torchvision
from PIL import Image
from reference import naive_forward
from safetensors.torch import save_file

from ellrobust.cli import app
from ellrobust.core.errors import CheckpointError, UsageError
from ellrobust.models import Classifier, ModelSpec, has_tokens, load_model, state_dict_digest

FAST = ["--data", "synthetic", "-n", "8", "--batch-size", "8"]

#: The 64-px, patch-8, 4-deep, 128-wide ViT of the issue (4 heads), with 10 classes.
SMALL_VIT = {"img_size": 64, "patch_size": 8, "depth": 4, "embed_dim": 128, "num_heads": 4, "num_classes": 10}


def _timm(name: str, **kw) -> torch.nn.Module:
    """A timm model with random weights, perturbed so that no parameter keeps its initial constant."""
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, **kw).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net


def _save(net: torch.nn.Module, path, metadata: dict | None = None):
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=metadata)
    return path


def _normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _image_folder(root, size: int, classes: int = 10):
    """One image per class (the models here have 10 classes), a little larger than ``size``."""
    for c in range(classes):
        (root / f"n{c:02d}").mkdir(parents=True)
        Image.new("RGB", (size + 16, size + 8), (20 * c, 120, 200 - 15 * c)).save(root / f"n{c:02d}" / "0.JPEG")
    return root


# --- timm: ------------------------------------------------------------------------------------------


@torch.no_grad()
def test_timm_prefix_gives_timms_logits(tmp_path):
    net = _timm("vit_tiny_patch16_224")
    path = _save(net, tmp_path / "vit_tiny.safetensors")
    model = load_model("timm:vit_tiny_patch16_224", checkpoint=path)
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    cfg = net.pretrained_cfg
    torch.testing.assert_close(model(images), net(_normalised(images, cfg["mean"], cfg["std"])), atol=1e-5, rtol=1e-5)
    assert not model.is_elliptical and model.input_size == 224 and has_tokens(model)
    assert model.describe() | {"params": 0} == {
        "library": "timm", "name": "vit_tiny_patch16_224", "class": "VisionTransformer", "num_classes": 1000,
        "img_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "params": 0,
    }  # fmt: skip


@torch.no_grad()
def test_timm_vit_blocks_are_timms_blocks():
    """The collapse probe's tokens are timm's: each block's stream, and the final one of forward_features."""
    model = load_model("timm:deit3_small_patch16_224", num_classes=10, img_size=32)
    images = torch.rand(3, 3, 32, 32)
    tokens, blocks = model.forward_blocks(images)
    net = model.net
    x = net.norm_pre(net._pos_embed(net.patch_embed(model.normalize(images))))
    for blk, out in zip(net.blocks, blocks, strict=True):
        x = blk(x)
        torch.testing.assert_close(out.x, x)
        assert out.q.shape == out.k.shape == out.v.shape == (3, 6, 5, 64) and out.m is None
    torch.testing.assert_close(tokens, net.forward_features(model.normalize(images)))
    assert model.depth == 12 and model.num_prefix_tokens == 1


def test_timm_models_without_standard_blocks_have_no_tokens():
    assert not has_tokens(load_model("timm:test_resnet", num_classes=10))
    assert has_tokens(load_model("timm:test_vit", num_classes=10))


def test_pretrained_config_gives_normalisation_and_size_flags_override():
    model = load_model("timm:resnet18", num_classes=10)
    assert (model.mean, model.std, model.input_size) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224)
    model = load_model("timm:resnet18", num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), img_size=32)
    assert (model.mean, model.std, model.input_size) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32)
    vit = load_model("timm:vit_tiny_patch16_224", num_classes=10, img_size=32)  # a fixed-size model is built for it
    assert vit.input_size == 32 and vit.net.pos_embed.shape == (1, 1 + 4, 192)


def test_missing_timm_is_one_line_naming_the_extra(monkeypatch, runner, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # what an environment without timm imports
    with pytest.raises(UsageError, match=r"pip install 'ellrobust\[timm\]'"):
        load_model("timm:resnet18")
    result = runner.invoke(app, ["eval", "-m", "timm:resnet18", *FAST, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "error: timm models need the timm package: pip install 'ellrobust[timm]'."
    ]


def test_timm_checkpoint_mismatch_is_the_strict_key_report(tmp_path):
    path = _save(_timm("vit_tiny_patch16_224", num_classes=10, img_size=32), tmp_path / "ck.safetensors")
    with pytest.raises(
        CheckpointError, match=r"wrong shapes: pos_embed: checkpoint \(1, 5, 192\) vs model \(1, 197, 192\).*--img-size"
    ):
        load_model("timm:vit_tiny_patch16_224", checkpoint=path, num_classes=10)
    assert load_model("timm:vit_tiny_patch16_224", checkpoint=path, num_classes=10, img_size=32).input_size == 32
    with pytest.raises(CheckpointError, match="unexpected keys: blocks.10.*wrong shapes: blocks.0"):
        load_model("timm:test_vit", checkpoint=path, num_classes=10, img_size=32)


# --- the ViT inferred from a checkpoint ---------------------------------------------------------------


@pytest.fixture
def small_vit(tmp_path):
    net = _timm("vit_tiny_patch16_224", **SMALL_VIT)
    return net, _save(net, tmp_path / "small_vit.safetensors")


@torch.no_grad()
def test_inferred_vit_matches_timm(small_vit):
    net, path = small_vit
    model = load_model("vit", checkpoint=path, heads=4)
    cfg = model.cfg
    assert (cfg.img_size, cfg.patch_size, cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.num_classes) == (
        64,
        8,
        4,
        128,
        4,
        10,
    )
    assert (cfg.mlp_ratio, cfg.elliptical_layers, cfg.distilled, cfg.layer_scale) == (4.0, (), False, False)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(images), net(_normalised(images, cfg.mean, cfg.std)), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_inferred_elliptical_twin_equals_the_naive_reference(small_vit):
    _, path = small_vit
    twin = load_model("vit-elliptical", checkpoint=path, heads=4)
    assert twin.cfg.elliptical_layers == (1, 2, 3) and twin.is_elliptical
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    out = twin(images)
    torch.testing.assert_close(out, naive_forward(twin, images), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, load_model("vit", checkpoint=path, heads=4)(images), atol=1e-6)  # m matters
    assert load_model("vit-elliptical", checkpoint=path, heads=4, elliptical_layers=(2,)).cfg.elliptical_layers == (2,)


@pytest.mark.parametrize(
    "name, kw, flags",
    [
        (
            "deit_tiny_distilled_patch16_224",
            {"img_size": 32, "depth": 2},
            {"distilled": True, "layer_scale": False, "class_pos_embed": True},
        ),
        (
            "deit3_small_patch16_224",
            {"img_size": 48, "depth": 2},
            {"distilled": False, "layer_scale": True, "class_pos_embed": False},
        ),
    ],
    ids=["distilled-deit", "layerscale-deit3"],
)
@torch.no_grad()
def test_distilled_and_layerscale_checkpoints_load_and_match_timm(tmp_path, name, kw, flags):
    net = _timm(name, num_classes=10, **kw)
    path = _save(net, tmp_path / "ck.safetensors")
    heads = net.blocks[0].attn.num_heads
    model = load_model("vit", checkpoint=path, heads=heads)
    assert {k: getattr(model.cfg, k) for k in flags} == flags
    size = kw["img_size"]
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        model(images), net(_normalised(images, model.cfg.mean, model.cfg.std)), atol=1e-5, rtol=1e-5
    )
    assert (
        sum(p.numel() for p in model.parameters())
        == sum(p.numel() for p in net.parameters())
        == ModelSpec("x", model.cfg, "").num_params()
    )
    tokens, blocks = model.forward_blocks(images)
    torch.testing.assert_close(
        tokens, net.forward_features(_normalised(images, model.cfg.mean, model.cfg.std)), atol=1e-5, rtol=1e-5
    )
    assert model.num_prefix_tokens == 1 + flags["distilled"]
    # resampled to another size, like every ellrobust ViT
    assert load_model("vit-elliptical", checkpoint=path, heads=heads, img_size=2 * size)(
        torch.rand(1, 3, 2 * size, 2 * size)
    ).shape == (1, 10)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"reg_tokens": 4}, "register tokens (reg_token)"),
        ({"qk_norm": True}, "query/key norms (q_norm, k_norm)"),
        ({"class_token": False, "global_pool": "avg"}, "no class token (cls_token), a global-pool head (fc_norm)"),
        ({"qkv_bias": False}, "a qkv projection without bias"),
        ({"pre_norm": True}, "a norm before the blocks (norm_pre)"),
        (
            {"reg_tokens": 1, "qk_norm": True, "pre_norm": True},
            "register tokens (reg_token), query/key norms (q_norm, k_norm), a norm before",
        ),
    ],
    ids=["registers", "qk-norm", "avg-pool", "no-qkv-bias", "pre-norm", "several"],
)
def test_unsupported_vits_are_refused_by_name(tmp_path, kw, needle):
    path = _save(_timm("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=10, **kw), tmp_path / "ck.safetensors")
    with pytest.raises(CheckpointError, match="does not support: ") as err:
        load_model("vit", checkpoint=path, heads=3)
    message = str(err.value)
    assert needle in message and "-m timm:NAME" in message and "\n" not in message


def test_heads_come_from_the_flag_or_the_metadata(tmp_path, small_vit):
    _, path = small_vit
    with pytest.raises(UsageError, match="pass --heads"):
        load_model("vit", checkpoint=path)
    with pytest.raises(UsageError, match="does not divide the width 128"):
        load_model("vit", checkpoint=path, heads=3)
    state = {k: v.contiguous() for k, v in load_model("vit", checkpoint=path, heads=4).state_dict().items()}
    save_file(state, str(tmp_path / "meta.safetensors"), metadata={"num_heads": "4"})
    assert load_model("vit", checkpoint=tmp_path / "meta.safetensors").cfg.num_heads == 4
    with pytest.raises(UsageError, match="contradicts"):
        load_model("vit", checkpoint=tmp_path / "meta.safetensors", heads=2)


def test_trained_checkpoints_need_no_flags(runner, tmp_path):
    """`ellrobust train` records the heads and elliptical layers: `-m vit-elliptical -c FILE` rebuilds the
    model exactly."""
    out = tmp_path / "nano.safetensors"
    args = [
        "train",
        "-m",
        "deit-nano-elliptical",
        "--data",
        "synthetic",
        "--epochs",
        "1",
        "--elliptical-layers",
        "2",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    twin = load_model("vit-elliptical", checkpoint=out)
    registered = load_model("deit-nano-elliptical", checkpoint=out)
    assert twin.cfg == registered.cfg and twin.cfg.elliptical_layers == (2,) and twin.cfg.num_heads == 2
    assert state_dict_digest(twin) == state_dict_digest(registered)
    assert load_model("vit", checkpoint=out).cfg.elliptical_layers == ()  # the name decides: `vit` is the plain twin


@pytest.mark.parametrize(
    "name", ["deit-nano-elliptical", "vit-elliptical", "timm:test_vit", "timm:test_resnet", "torchvision:resnet18"]
)
@torch.no_grad()
def test_every_kind_of_model_keeps_the_contract(tmp_path, name):
    """[0, 1] images in, logits out, the Classifier questions answered; tokens where the probe can read them."""
    path = None
    if name.startswith("vit"):
        path = _save(load_model("deit-nano"), tmp_path / "nano.safetensors", {"num_heads": "2"})
    model = load_model(name, checkpoint=path, num_classes=10, img_size=32)
    assert isinstance(model, Classifier) and model.input_size == 32 and not model.training
    assert model.is_elliptical == name.endswith("elliptical")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    json.dumps(model.describe())  # JSON-ready: part of unit identities and run.json
    if has_tokens(model):
        tokens, blocks = model.forward_blocks(torch.rand(2, 3, 32, 32))
        assert len(blocks) == model.depth and blocks[-1].x.shape[1] == tokens.shape[1]
    else:
        assert name.endswith(("resnet", "resnet18"))


# --- through the engine and the CLI -----------------------------------------------------------------


def test_torchvision_resnet18_runs_through_eval_fgsm(runner, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    out = tmp_path / "run"
    args = [
        "eval",
        *FAST,
        "-m",
        "torchvision:resnet18",
        "-c",
        str(path),
        "-m",
        "deit-nano-elliptical",
        "-c",
        "-",
        "--img-size",
        "32",
    ]
    result = runner.invoke(
        app, [*args, "--attack", "fgsm", "--eps", "8/255", "--m-grad", "both", "--out", str(out), "--json", "--report"]
    )
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.stdout) if r["model"] == "torchvision:resnet18"]
    robust = [r for r in rows if r["metric"] == "robust_accuracy" and r["method"] == "fgsm"]
    assert len(robust) == 1 and robust[0]["m_grad"] == ""  # a baseline: m_grad does not apply
    info = json.loads((out / "run.json").read_text())["models"]["torchvision:resnet18"]
    assert info["weights"] == str(path) and not info["elliptical"] and not info["tokens"]
    assert (
        info["config"]["library"] == "torchvision"
        and info["config"]["name"] == "resnet18"
        and info["config"]["img_size"] == 32
    )
    assert "torchvision resnet18 (ResNet), 32 px" in (out / "report.md").read_text()
    again = runner.invoke(app, [*args, "--attack", "fgsm", "--eps", "8/255", "--m-grad", "both", "--out", str(out)])
    assert "0 units computed" in again.stderr
    other = runner.invoke(
        app,
        [
            *args,
            "--mean",
            "0.5",
            "--mean",
            "-",
            "--attack",
            "fgsm",
            "--eps",
            "8/255",
            "--m-grad",
            "both",
            "--out",
            str(out),
        ],
    )
    assert (
        other.exit_code == 0 and "0 units computed" not in other.stderr
    )  # another normalisation, other logits: recomputed


def test_mixed_collapse_measures_the_models_with_tokens(runner, tmp_path):
    args = [
        "eval",
        *FAST,
        "-m",
        "timm:test_vit",
        "-m",
        "timm:test_resnet",
        "-m",
        "deit-nano",
        "--img-size",
        "32",
        "--attack",
        "none",
    ]
    result = runner.invoke(app, [*args, "--collapse", "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    measured = {r["model"] for r in json.loads(result.stdout) if r["metric"] == "token_cosine"}
    assert measured == {"timm:test_vit", "deit-nano"}
    assert "not measured for timm:test_resnet (no tokens)" in result.stderr


def test_inferred_vit_through_the_cli_on_an_image_folder(runner, tmp_path, small_vit):
    _, path = small_vit
    root = _image_folder(tmp_path / "data", 64)
    base = ["eval", "--data", "imagefolder", "--data-root", str(root), "--attack", "none", "--heads", "4"]
    result = runner.invoke(
        app,
        [
            *base,
            "-m",
            "vit",
            "-c",
            str(path),
            "-m",
            "vit-elliptical",
            "-c",
            str(path),
            "--img-size",
            "64",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["models"]["vit-elliptical"]["config"]["elliptical_layers"] == [1, 2, 3]
    assert meta["models"]["vit"]["config"] | {"elliptical_layers": None} == meta["models"]["vit-elliptical"][
        "config"
    ] | {"elliptical_layers": None}
    at_224 = runner.invoke(app, [*base, "-m", "vit", "-c", str(path), "--out", str(tmp_path / "r224"), "--json"])
    assert at_224.exit_code == 0, at_224.output  # resampled to the folder's default 224 px, like every ellrobust ViT
    assert json.loads((tmp_path / "r224" / "run.json").read_text())["dataset"]["digest"] != meta["dataset"]["digest"]


def test_models_listing_explains_the_prefixes(runner):
    result = runner.invoke(app, ["models", "--json"])
    sources = {s["name"]: s for s in json.loads(result.stdout)["your_own"]}
    assert {"vit", "vit-elliptical", "timm:NAME", "torchvision:NAME"} <= set(sources)
    assert "-c" in sources["timm:NAME"]["example"]
