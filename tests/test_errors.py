"""Bad input, table-driven over the whole CLI: one line on stderr, exit code 2, no traceback.

Each case builds what it needs in a temporary folder (hostile pickles, truncated checkpoints,
corrupt images, old run folders) and names a fragment the message must contain, so that a case
passes only when the error names the actual problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ellrobust.cli import app
from ellrobust.models import load_model
from ellrobust.results import SCHEMA_VERSION

FAST = ["--data", "synthetic", "--n", "8", "--batch-size", "8"]


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _nano_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return load_model("deit-nano").state_dict()


def truncated_checkpoint(tmp: Path) -> list[str]:
    path = tmp / "ck.pth"
    torch.save(_nano_state(), path)
    path.write_bytes(path.read_bytes()[:200])
    return ["eval", "-m", "deit-nano", "-c", str(path), *FAST, "--attack", "none"]


def other_architecture(tmp: Path) -> list[str]:
    path = tmp / "ck.safetensors"
    save_file(_nano_state(), str(path))
    return ["eval", "-m", "deit-micro", "-c", str(path), *FAST, "--attack", "none"]


def code_pickle(tmp: Path) -> list[str]:
    path = tmp / "evil.pth"
    torch.save({"model": _nano_state(), "x": Payload(str(tmp / "pwned"))}, path)
    return ["eval", "-m", "deit-nano", "-c", str(path), *FAST, "--attack", "none"]


def wrong_shapes_safetensors(tmp: Path) -> list[str]:
    state = _nano_state()
    state["head.weight"] = torch.zeros(10, 33)
    path = tmp / "ck.safetensors"
    save_file(state, str(path))
    return ["eval", "-m", "deit-nano", "-c", str(path), *FAST, "--attack", "none"]


def _image_folder(tmp: Path, corrupt: bool) -> Path:
    for wnid in ("n01", "n02"):
        (tmp / "data" / wnid).mkdir(parents=True)
        Image.new("RGB", (240, 240), (10, 200, 30)).save(tmp / "data" / wnid / "ok.JPEG")
    if corrupt:
        (tmp / "data" / "n02" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return tmp / "data"


def corrupt_image(tmp: Path) -> list[str]:
    root = _image_folder(tmp, corrupt=True)
    return [
        "eval",
        "-m",
        "deit-nano",
        "--data",
        "imagefolder",
        "--data-root",
        str(root),
        "--attack",
        "none",
        "--batch-size",
        "4",
    ]


def decompression_bomb(tmp: Path) -> list[str]:
    """A real bomb: 20 000 × 20 000 pixels (400 million, 1.2 GB as RGB) in a PNG of about 50 kB."""
    root = _image_folder(tmp, corrupt=False)
    Image.new("1", (20_000, 20_000)).save(root / "n02" / "bomb.png")
    assert (root / "n02" / "bomb.png").stat().st_size < 100_000
    return [
        "eval",
        "-m",
        "deit-nano",
        "--data",
        "imagefolder",
        "--data-root",
        str(root),
        "--attack",
        "none",
        "--img-size",
        "32",
    ]


def image_over_the_pixel_limit(tmp: Path) -> list[str]:
    root = _image_folder(tmp, corrupt=False)  # 240 × 240 = 57 600 pixels each
    return ["eval", "-m", "deit-nano", "--data", "imagefolder", "--data-root", str(root), "--attack", "none",
            "--img-size", "32", "--max-image-pixels", "50000"]  # fmt: skip


def suite_budget_above_the_bound(tmp: Path) -> list[str]:
    (tmp / "s.toml").write_text('[[attack]]\nname = "square"\nqueries = 5000000\n')
    return ["eval", "-m", "deit-nano", *FAST, "--suite", str(tmp / "s.toml")]


def empty_dataset(tmp: Path) -> list[str]:
    (tmp / "data" / "n01").mkdir(parents=True)
    return ["eval", "-m", "deit-nano", "--data", "imagefolder", "--data-root", str(tmp / "data"), "--attack", "none"]


def out_is_file(tmp: Path) -> list[str]:
    (tmp / "out").write_text("x")
    return ["eval", "-m", "deit-nano", *FAST, "--attack", "none", "--out", str(tmp / "out")]


def out_inside_file(tmp: Path) -> list[str]:
    (tmp / "out").write_text("x")
    return ["eval", "-m", "deit-nano", *FAST, "--attack", "none", "--out", str(tmp / "out" / "run")]


def data_root_is_file(tmp: Path) -> list[str]:
    (tmp / "f").write_text("x")
    return ["eval", "-m", "deit-nano", "--data", "cifar10", "--data-root", str(tmp / "f")]


def suite_bad_toml(tmp: Path) -> list[str]:
    (tmp / "s.toml").write_text("[[attack]\nname = ")
    return ["eval", "-m", "deit-nano", *FAST, "--suite", str(tmp / "s.toml")]


def suite_unknown_param(tmp: Path) -> list[str]:
    (tmp / "s.toml").write_text('[[attack]]\nname = "pgd"\nstepz = 3\n')
    return ["eval", "-m", "deit-nano", *FAST, "--suite", str(tmp / "s.toml")]


def _run_folder(tmp: Path, schema: int, version: str) -> Path:
    """A run folder whose run.json records a results schema and the ellrobust that wrote it."""
    run = tmp / f"schema{schema}"
    run.mkdir()
    (run / "results.csv").write_text("model,dataset,n,method,metric,value\ndeit,digits,10,clean,clean_accuracy,0.9\n")
    (run / "run.json").write_text(json.dumps({"schema_version": schema, "environment": {"ellrobust": version}}))
    return run


def old_run_report(tmp: Path) -> list[str]:
    return ["report", str(_run_folder(tmp, SCHEMA_VERSION - 1, "0.4.0")), "--out", str(tmp / "rep")]


def newer_run_check(tmp: Path) -> list[str]:
    (tmp / "b.json").write_text("[]")
    return ["check", str(_run_folder(tmp, SCHEMA_VERSION + 1, "9.0.0")), "--baseline", str(tmp / "b.json")]


def old_baseline_check(tmp: Path) -> list[str]:
    """A current run against a baseline of an earlier schema (a header naming schema and version)."""
    old = {"command": "ellrobust …", "ellrobust_version": "0.4.0", "schema_version": SCHEMA_VERSION - 1, "records": []}
    (tmp / "b.json").write_text(json.dumps(old))
    return ["check", str(_run_folder(tmp, SCHEMA_VERSION, "now")), "--baseline", str(tmp / "b.json")]


def headerless_baseline_check(tmp: Path) -> list[str]:
    """A baseline as ellrobust 0.4 wrote it: a bare list of records, with no schema at all."""
    record = {"model": "deit", "dataset": "digits", "n": 10, "metric": "clean_accuracy", "value": 0.9}
    (tmp / "b.json").write_text(json.dumps([{**record, "ellrobust_version": "0.4.0"}]))
    return ["check", str(_run_folder(tmp, SCHEMA_VERSION, "now")), "--baseline", str(tmp / "b.json")]


def malformed_baseline(tmp: Path) -> list[str]:
    run = tmp / "run"
    run.mkdir()
    (tmp / "b.json").write_text("{not json")
    (run / "results.csv").write_text(
        "model,dataset,split,n,method,metric,value,seed\ndeit,digits,test,10,clean,clean_accuracy,0.9,0\n"
    )
    return ["check", str(run), "--baseline", str(tmp / "b.json")]


def results_missing_columns(tmp: Path) -> list[str]:
    run = tmp / "run"
    run.mkdir()
    (run / "results.csv").write_text("model,metric,value\ndeit,clean_accuracy,0.9\n")
    return ["report", str(run), "--out", str(tmp / "rep")]


def convert_code_pickle(tmp: Path) -> list[str]:
    path = tmp / "evil.pth"
    torch.save({"model": _nano_state(), "x": Payload(str(tmp / "pwned"))}, path)
    return ["convert", str(path), str(tmp / "out.safetensors")]


def _nano_safetensors(tmp: Path) -> str:
    path = tmp / "nano.safetensors"
    save_file(_nano_state(), str(path))  # no metadata: the heads are not known
    return str(path)


def vit_without_heads(tmp: Path) -> list[str]:
    return ["eval", "-m", "vit", "-c", _nano_safetensors(tmp), *FAST, "--attack", "none"]


def vit_heads_not_dividing(tmp: Path) -> list[str]:
    return ["eval", "-m", "vit-elliptical", "-c", _nano_safetensors(tmp), "--heads", "3", *FAST, "--attack", "none"]


def vit_with_register_tokens(tmp: Path) -> list[str]:
    import timm

    net = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1, num_classes=10, reg_tokens=4
    )
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / "reg.safetensors"))
    return ["eval", "-m", "vit", "-c", str(tmp / "reg.safetensors"), "--heads", "3", *FAST, "--attack", "none"]


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str] | Callable[[Path], list[str]]
    needle: str


CASES = [
    Case("unknown model", ["eval", "-m", "deit-elliptcal"], "Did you mean 'deit-elliptical'"),
    Case("unknown attack", ["eval", "-m", "deit", "--attack", "pgdd"], "Did you mean 'pgd'"),
    Case("unknown dataset", ["eval", "-m", "deit", "--data", "cifar100"], "Did you mean 'cifar10'"),
    Case("unknown corruption", ["eval", "-m", "deit", *FAST, "--corruption", "fogg"], "Did you mean 'fog'"),
    Case("eps malformed", ["eval", "-m", "deit", "--attack", "pgd", "--eps", "8//255"], "not a number"),
    Case("eps above 1", ["eval", "-m", "deit", "--attack", "pgd", "--eps", "8"], "outside [0, 1]"),
    Case("eps negative", ["eval", "-m", "deit", "--attack", "pgd", "--eps", "-2/255"], "outside [0, 1]"),
    Case("steps zero", ["eval", "-m", "deit", "--attack", "pgd", "--steps", "0"], "--steps must be a positive integer"),
    Case("steps not a number", ["eval", "-m", "deit", "--attack", "pgd", "--steps", "ten"], "'--steps'"),
    Case(
        "restarts negative",
        ["eval", "-m", "deit", "--attack", "pgd", "--restarts", "-1"],
        "--restarts must be a positive integer",
    ),
    Case(
        "steps absurd",
        ["eval", "-m", "deit", "--attack", "pgd", "--steps", "99999999999999999999"],
        "--steps 99999999999999999999 is above the bound of 1,000,000",
    ),
    Case(
        "restarts above the bound",
        ["eval", "-m", "deit", "--attack", "pgd", "--restarts", "1000001"],
        "--restarts 1000001 is above the bound",
    ),
    Case(
        "samples above the bound",
        ["eval", "-m", "deit", "--attack", "spsa", "--samples", "1000001"],
        "--samples 1000001 is above the bound",
    ),
    Case(
        "queries above the bound",
        ["eval", "-m", "deit", "--attack", "square", "--queries", "1000001"],
        "--queries 1000001 is above the bound",
    ),
    Case("suite budget above the bound", suite_budget_above_the_bound, "--queries 5000000 is above the bound"),
    Case(
        "n above the bound",
        ["eval", "-m", "deit", "-n", "100000001"],
        "--n 100000001 is above the bound of 100,000,000 images",
    ),
    Case(
        "collapse n above the bound",
        ["collapse", "-m", "deit-nano", "-n", "100000001"],
        "--n 100000001 is above the bound",
    ),
    Case(
        "step size malformed",
        ["eval", "-m", "deit", *FAST, "--attack", "pgd", "--step-size", "fast"],
        "step size 'fast'",
    ),
    Case("severity out of range", ["eval", "-m", "deit", "--corruption", "fog", "--severity", "6"], "outside 1–5"),
    Case(
        "severity malformed",
        ["eval", "-m", "deit", "--corruption", "fog", "--severity", "high"],
        "--severity value 'high'",
    ),
    Case("n zero", ["eval", "-m", "deit", "--n", "0"], "--n must be a positive"),
    Case("n empty", ["eval", "-m", "deit", "--n", ""], "'--n'"),
    Case("batch size zero", ["eval", "-m", "deit", "--batch-size", "0"], "--batch-size must be positive"),
    Case("m_grad unknown", ["eval", "-m", "deit", "--m-grad", "partial"], "--m-grad must be one of"),
    Case("checkpoint count", ["eval", "-m", "deit", "-m", "deit-elliptical", "-c", "a.pth"], "give one per model"),
    Case("missing checkpoint", ["eval", "-m", "deit-nano", "-c", "/nonexistent/ck.pth", *FAST], "does not exist"),
    Case(
        "missing data root", ["eval", "-m", "deit", "--data", "cifar10", "--data-root", "/nonexistent"], "not a folder"
    ),
    Case("data root needed", ["eval", "-m", "deit", "--data", "cifar10"], "--data-root"),
    Case("data root is a file", data_root_is_file, "not a folder"),
    Case("out is a file", out_is_file, "is a file"),
    Case("out inside a file", out_inside_file, "file"),
    Case("truncated checkpoint", truncated_checkpoint, "truncated"),
    Case("checkpoint of another architecture", other_architecture, "wrong shapes"),
    Case("pickle that would run code", code_pickle, "--trust"),
    Case("safetensors with wrong shapes", wrong_shapes_safetensors, "head.weight"),
    Case("corrupt image in image folder", corrupt_image, "broken.JPEG"),
    Case(
        "decompression bomb in image folder",
        decompression_bomb,
        f"bomb.png' has more than {Image.MAX_IMAGE_PIXELS:,} pixels",
    ),
    Case(
        "image above --max-image-pixels",
        image_over_the_pixel_limit,
        "more than 50,000 pixels, the limit against decompression bombs",
    ),
    Case(
        "max-image-pixels not positive",
        ["eval", "-m", "deit-nano", *FAST, "--max-image-pixels", "0"],
        "--max-image-pixels must be a positive",
    ),
    Case("empty dataset", empty_dataset, "no"),
    Case("suite file missing", ["eval", "-m", "deit", "--suite", "/nonexistent.toml"], "does not exist"),
    Case("suite not TOML", suite_bad_toml, "not valid TOML"),
    Case("suite unknown parameter", suite_unknown_param, "takes no parameter stepz"),
    Case("collapse layer out of range", ["collapse", "-m", "deit-nano", *FAST, "--layers", "7"], "0–2"),
    Case("collapse unknown feature", ["collapse", "-m", "deit-nano", *FAST, "--feature", "keys"], "keys"),
    Case("report of a missing run", ["report", "/nonexistent/run", "--out", "/tmp/x"], "does not exist"),
    Case("report of an older run folder", old_run_report, f"0.4.0 (results schema {SCHEMA_VERSION - 1}); ellrobust"),
    Case("check of a newer run folder", newer_run_check, "recompute it with the same command"),
    Case("check against an older baseline", old_baseline_check, "regenerate the baseline with the command at its top"),
    Case("check against a baseline without schema", headerless_baseline_check, "0.4.0 (no results schema)"),
    Case("check with a malformed baseline", malformed_baseline, "baseline"),
    Case("results table without required columns", results_missing_columns, "lacks the columns"),
    Case("train to a non-safetensors file", ["train", "-m", "deit-nano", "--out", "model.pt"], ".safetensors"),
    Case("train a short name", ["train", "-m", "deit", "--out", "m.safetensors"], "short name"),
    Case("convert a code pickle without --trust", convert_code_pickle, "--trust"),
    Case("convert a missing file", ["convert", "/nonexistent.pth", "out.safetensors"], "does not exist"),
    Case("unknown command", ["evaluate"], "No such command"),
    Case("unknown model prefix", ["eval", "-m", "tv:resnet18", *FAST], "unknown model prefix 'tv'"),
    Case(
        "unknown timm model",
        ["eval", "-m", "timm:vit_tiny_patch16_244", *FAST],
        "Did you mean 'timm:vit_tiny_patch16_224'",
    ),
    Case("unknown timm tag", ["eval", "-m", "timm:resnet18.nosuchtag", *FAST], "Invalid pretrained tag"),
    Case(
        "unknown torchvision model",
        ["eval", "-m", "torchvision:resnet19", *FAST],
        "Did you mean 'torchvision:resnet18'",
    ),
    Case("prefix without a name", ["eval", "-m", "timm:", *FAST], "names no timm model"),
    Case(
        "model input size differs from the images",
        ["eval", "-m", "timm:test_vit", *FAST],
        "takes 160 px images but the run's images (synthetic) are 32 px; pass --img-size 32",
    ),
    Case(
        "img-size on a fixed-size dataset", ["eval", "-m", "deit-nano", *FAST, "--img-size", "64"], "has 32 px images"
    ),
    Case(
        "img-size not positive", ["eval", "-m", "deit-nano", *FAST, "--img-size", "0"], "--img-size must be a positive"
    ),
    Case(
        "elliptical layers of a baseline",
        ["eval", "-m", "timm:test_vit", *FAST, "--img-size", "32", "--elliptical-layers", "1"],
        "is a baseline",
    ),
    Case(
        "collapse of a model without tokens",
        ["collapse", "-m", "timm:test_resnet", *FAST, "--img-size", "32"],
        "collapse needs tokens",
    ),
    Case("vit without a checkpoint", ["eval", "-m", "vit", *FAST], "pass its weights with -c FILE"),
    Case("vit without --heads", vit_without_heads, "pass --heads"),
    Case("heads not dividing the width", vit_heads_not_dividing, "does not divide the width 32"),
    Case("heads for no inferred model", ["eval", "-m", "deit-nano", *FAST, "--heads", "2"], "--heads applies to"),
    Case("heads malformed", ["eval", "-m", "deit-nano", *FAST, "--heads", "four"], "--heads value 'four'"),
    Case("unsupported ViT checkpoint", vit_with_register_tokens, "does not support: register tokens (reg_token)"),
    Case("mean malformed", ["eval", "-m", "deit-nano", *FAST, "--mean", "0.5,x,0.5"], "--mean value '0.5,x,0.5'"),
    Case("mean of two channels", ["eval", "-m", "deit-nano", *FAST, "--mean", "0.5,0.5"], "give 3 (R, G, B)"),
    Case("std not positive", ["eval", "-m", "deit-nano", *FAST, "--std", "0"], "--std values must be positive"),
    Case(
        "mean count",
        [
            "eval",
            "-m",
            "deit-nano",
            "-m",
            "deit-nano-elliptical",
            "-m",
            "deit-micro",
            *FAST,
            "--mean",
            "0.5",
            "--mean",
            "0.5",
        ],
        "2 --mean for 3 --model",
    ),
    Case(
        "train another library's model",
        ["train", "-m", "timm:resnet18", "--out", "m.safetensors"],
        "trains ellrobust's ViTs",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(runner, tmp_path, case):
    args = case.args(tmp_path) if callable(case.args) else list(case.args)
    if args[0] == "eval" and "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert case.needle in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "pwned").exists()


def test_nan_weights_are_reported_not_crashed(runner, tmp_path):
    state = _nano_state()
    state["head.weight"] = torch.full_like(state["head.weight"], float("nan"))
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    result = runner.invoke(
        app,
        ["eval", "-m", "deit-nano", "-c", str(path), *FAST, "--attack", "fgsm", "--out", str(tmp_path / "r"), "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    clean = [r for r in rows if r["metric"] == "clean_accuracy"]
    assert clean[0]["value"] == 0.0
    assert any(r["metric"] == "sanity_finite_logits" and r["value"] == 0.0 for r in rows)
    assert "NaN" in result.stderr


def test_help_states_every_bound(runner):
    """Each bounded option says its bound in --help (four budgets at 1,000,000; -n at 100,000,000)."""
    text = runner.invoke(
        app, ["eval", "--help"], env={"COLUMNS": "200"}
    ).output  # one line per option: no wrapped bound
    assert text.count("at most 1,000,000") == 4 and "at most 100,000,000" in text
    assert "at most 100,000,000" in runner.invoke(app, ["collapse", "--help"], env={"COLUMNS": "200"}).output


def test_version_needs_no_command(runner):
    from ellrobust.core.version import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == __version__
