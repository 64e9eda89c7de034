"""ImageNet-scale plumbing on small data: one image store per run, one worker pool, precision, layers.

* Every selected image is decoded exactly once per run, whatever the models, attacks, budgets,
  corruptions and collapse measurements, with and without worker processes.
* Precision is part of a unit's identity and of its rows; verdicts are strict fp32 forwards.
* ``--workers auto`` and ``--elliptical-layers`` are parsed, applied and recorded in run.json.
"""

from __future__ import annotations

import json
import multiprocessing
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from ellrobust.cli import app
from ellrobust.core.errors import UsageError
from ellrobust.core.parsing import parse_elliptical_layers, parse_workers
from ellrobust.core.workers import auto_workers, usable_cores
from ellrobust.data import DATASETS, DatasetSpec
from ellrobust.engine.runner import EvalConfig, Evaluation
from ellrobust.measures.collapse_probe import CollapseConfig

N_IMAGES = 30


class CountingDataset(Dataset):
    """32 px 8-bit images that count how often each one is decoded, across forked workers too."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.images = torch.randint(0, 256, (N_IMAGES, 3, 32, 32), generator=g).float() / 255
        self.labels = torch.randint(0, 10, (N_IMAGES,), generator=g)
        self.classes = list(range(10))
        self.decodes = multiprocessing.Array("i", N_IMAGES)  # shared memory: workers fork after it exists

    def __len__(self) -> int:
        return N_IMAGES

    def __getitem__(self, index: int):
        with self.decodes.get_lock():
            self.decodes[index] += 1
        return self.images[index], int(self.labels[index])


@pytest.fixture
def counting(monkeypatch):
    """A registered dataset that needs decoding (not a tensor dataset), and its decode counters."""
    made: list[CountingDataset] = []

    def build(split, root):
        made.append(CountingDataset())
        return made[-1]

    spec = DatasetSpec(
        "counting", "decode counter", 32, "deit-nano", (4 / 255,), build, num_classes=10, pixel_dtype="uint8"
    )
    monkeypatch.setitem(DATASETS._entries, "counting", spec)
    return made


@pytest.mark.parametrize("workers", [0, 2])
def test_each_image_is_decoded_exactly_once_per_run(counting, tmp_path, workers):
    from ellrobust.attacks import make_request

    cfg = EvalConfig(
        models=("deit-nano", "deit-nano-elliptical"),
        dataset="counting",
        n=20,
        batch_size=8,
        attacks=(make_request("fgsm"), make_request("pgd", {"steps": 2})),
        eps=(2 / 255, 8 / 255),
        m_grad="both",
        corruptions=("contrast", "gaussian_noise"),
        severities=(1, 2),
        collapse=CollapseConfig(metrics=("token_cosine",)),
        workers=workers,
    )
    result = Evaluation(cfg, tmp_path / "run").run()
    decodes = np.asarray(counting[0].decodes[:])
    selected = sorted(set(pd.read_csv(tmp_path / "run" / "examples.csv.gz")["index"]))
    assert len(selected) == 20 and decodes[selected].tolist() == [1] * 20
    assert decodes.sum() == 20  # nothing outside the selection either
    startup = json.loads((tmp_path / "run" / "run.json").read_text())["startup"]
    assert startup["decoded_images"] == 20 and startup["workers"] == workers
    assert result.computed > 20  # many units read the same decoded images


def test_a_store_file_in_the_cache_is_reused_by_the_next_run(counting, tmp_path):
    common = dict(
        models=("deit-nano",),
        dataset="counting",
        n=12,
        batch_size=4,
        cache_dir=str(tmp_path / "cache"),
        memory_budget_gb=0,
    )
    first = Evaluation(EvalConfig(**common), tmp_path / "first").run()
    second = Evaluation(EvalConfig(**common), tmp_path / "second").run()
    assert counting[0].decodes[:].count(1) == 12 and sum(counting[1].decodes[:]) == 0  # the second run decoded nothing
    assert (
        first.table[first.table.metric == "clean_accuracy"].value.tolist()
        == second.table[second.table.metric == "clean_accuracy"].value.tolist()
    )
    meta = json.loads((tmp_path / "second" / "run.json").read_text())["startup"]
    assert meta["decoded_images"] == 0 and meta["store"].startswith(str(tmp_path / "cache"))


def test_over_the_memory_budget_the_store_is_a_file_removed_after_the_run(counting, tmp_path):
    cfg = EvalConfig(models=("deit-nano",), dataset="counting", n=10, memory_budget_gb=0)
    Evaluation(cfg, tmp_path / "run").run()
    startup = json.loads((tmp_path / "run" / "run.json").read_text())["startup"]
    assert startup["store"].startswith(str(tmp_path / "run")) and startup["store"].endswith(".bin")
    assert not list((tmp_path / "run").glob("images-*"))


# --- precision ---------------------------------------------------------------------------------------


def test_verdicts_are_fp32_forwards_whatever_the_attack_precision(tmp_path, monkeypatch):
    """Attack iterations run under bf16 autocast; every forward that decides correct or not does not."""
    from ellrobust.attacks import make_request
    from ellrobust.engine import runner as engine

    calls: list[str] = []
    load = engine.load_models

    def loaded(*args, **kwargs):
        models = load(*args, **kwargs)
        for lm in models.values():
            lm.module.register_forward_pre_hook(
                lambda module, inputs: calls.append("T" if torch.is_autocast_enabled("cpu") else "F")
            )
        return models

    monkeypatch.setattr(engine, "load_models", loaded)
    attack = make_request("pgd", {"steps": 2})
    cfg = EvalConfig(
        models=("deit",), n=16, batch_size=8, attacks=(attack,), eps=(8 / 255,), precision=("bf16",), sanity=False
    )
    table = Evaluation(cfg, tmp_path / "run").run().table
    # two clean batches (fp32), then per attacked batch of the shipped model: two PGD steps in bf16, one fp32 verdict
    assert re.fullmatch(r"FF(TTF)+", "".join(calls)), "".join(calls)
    assert set(table[table.metric == "robust_accuracy"].precision) == {"bf16"}


def test_precision_is_part_of_the_unit_identity_and_of_the_rows(tmp_path):
    from ellrobust.attacks import make_request

    common = dict(
        models=("deit-nano",), dataset="synthetic", n=16, batch_size=8, attacks=(make_request("fgsm"),), eps=(8 / 255,)
    )
    first = Evaluation(EvalConfig(**common, precision=("fp32",)), tmp_path / "run").run()
    second = Evaluation(EvalConfig(**common, precision=("fp32", "bf16")), tmp_path / "run").run()
    assert second.reused == first.computed and second.computed >= 2  # clean + fp32 reused; bf16 units are new
    rows = second.table[second.table.metric == "robust_accuracy"]
    assert sorted(rows.precision) == ["bf16", "fp32"]
    assert set(second.table[second.table.metric == "clean_accuracy"].precision.fillna("")) == {""}
    labels = [u["label"] for u in json.loads((tmp_path / "run" / "run.json").read_text())["units"]]
    assert any(label.endswith("bf16") for label in labels)


def test_bf16_and_tf32_agree_with_fp32_within_noise_on_the_shipped_models(runner, tmp_path):
    """A lower precision of the iterations may weaken the attack, but only within sampling noise here."""
    out = tmp_path / "run"
    args = [
        "eval",
        "-m",
        "deit-elliptical",
        "-m",
        "deit",
        "--attack",
        "pgd",
        "--eps",
        "2/255",
        "--n",
        "120",
        "--precision",
        "bf16,tf32,fp32",
        "--out",
        str(out),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    df = pd.DataFrame(json.loads(result.stdout))
    robust = df[(df.metric == "robust_accuracy") & (df.method == "pgd")].set_index(["model", "precision"]).value
    for model in ("deit-elliptical", "deit"):
        p = robust[(model, "fp32")]
        se = max((p * (1 - p) / 120) ** 0.5, 1 / 120)
        for precision in ("bf16", "tf32"):
            assert abs(robust[(model, precision)] - p) <= 2 * se, (model, precision, robust[(model, precision)], p)
    checks = df[df.metric == "sanity_precision_not_above_fp32"]
    assert set(checks.precision) == {"bf16", "tf32"} and (checks.value == 1).all()
    assert json.loads((out / "run.json").read_text())["config"]["precision"] == ["bf16", "tf32", "fp32"]


def test_run_json_records_how_each_attack_unit_spent_its_time(tmp_path):
    """AutoAttack-style cascades time each component; SPSA records the images per forward pass it used."""
    from ellrobust.attacks import make_request

    attacks = (
        make_request("apgd", {"steps": 2, "target_classes": 2}),
        make_request("spsa", {"steps": 2, "samples": 4}),
    )
    cfg = EvalConfig(
        models=("deit",), n=12, batch_size=6, attacks=attacks, eps=(8 / 255,), sanity=False
    )  # the shipped model: images to attack
    Evaluation(cfg, tmp_path / "run").run()
    units = {u["label"]: u for u in json.loads((tmp_path / "run" / "run.json").read_text())["units"]}
    apgd = next(u for label, u in units.items() if label.startswith("deit apgd"))
    spsa = next(u for label, u in units.items() if label.startswith("deit spsa"))
    assert apgd["n_attacked"] > 0
    assert list(apgd["components"]) == ["apgd-ce", "apgd-t"]
    ce, t = apgd["components"]["apgd-ce"], apgd["components"]["apgd-t"]
    assert ce["attacked"] == apgd["n_attacked"] and t["attacked"] == ce["attacked"] - ce["broken"]
    assert all(c["seconds"] > 0 for c in (ce, t)) or t["attacked"] == 0
    assert 1 <= spsa["spsa_images_per_forward"] <= 2 * 4 * 6  # 2 × samples × batch at most


def test_a_lower_precision_above_fp32_fails_its_sanity_check():
    from ellrobust.attacks.sanity_checks import sanity_rows
    from ellrobust.results import Metric, Row
    from ellrobust.run.units import Unit

    class Ctx:
        indices = list(range(100))
        data = type("D", (), {"num_classes": 10})()

    rows = [Row("m", Metric.CLEAN_ACCURACY, 0.9, "clean")]
    for precision, value in (("fp32", 0.30), ("bf16", 0.50)):
        rows.append(Row("m", Metric.ROBUST_ACCURACY, value, "pgd", eps=0.01, precision=precision))
    extras = [
        (
            Unit("attack", "m", "pgd", "{}", 0.01, None, "", (), p),
            {"n_attacked": 0, "max_perturbation": 0, "min_pixel": 0, "max_pixel": 1},
        )
        for p in ("fp32", "bf16")
    ]
    flags = {(r.precision, r.metric): r.value for r in sanity_rows(Ctx(), rows, extras)}
    assert flags[("bf16", "sanity_precision_not_above_fp32")] == 0.0
    assert ("fp32", "sanity_precision_not_above_fp32") not in flags


# --- workers and elliptical layers -------------------------------------------------------------------


def test_auto_workers_use_the_cores_for_data_that_needs_decoding_only():
    assert auto_workers(on_disk=False) == 0
    assert auto_workers(on_disk=True) == min(32, usable_cores())
    assert auto_workers(on_disk=True, local_world_size=usable_cores() * 2) == 1
    assert parse_workers("auto") is None and parse_workers("3") == 3
    for bad in ("-1", "many", ""):
        with pytest.raises(UsageError, match="--workers"):
            parse_workers(bad)


def test_workers_auto_is_the_default_and_is_recorded(runner, tmp_path):
    result = runner.invoke(
        app,
        [
            "eval",
            "--data",
            "synthetic",
            "-m",
            "deit-nano",
            "--n",
            "8",
            "--attack",
            "none",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["config"]["workers"] is None and meta["startup"]["workers"] == 0  # in-memory data: no processes
    bad = runner.invoke(
        app, ["eval", "--data", "synthetic", "-m", "deit-nano", "--workers", "lots", "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code == 2 and "--workers" in bad.output and "Traceback" not in bad.output


def test_elliptical_layers_parse():
    assert parse_elliptical_layers(["1-3"]) == ((1, 2, 3),)
    assert parse_elliptical_layers(["2,4", "-"]) == ((2, 4), None)
    for bad in (["0"], ["a-b"], [""]):
        with pytest.raises(UsageError, match="--elliptical-layers"):
            parse_elliptical_layers(bad)


def test_elliptical_layers_apply_per_model_and_are_recorded(runner, tmp_path):
    base = ["eval", "--data", "synthetic", "-n", "8", "--attack", "none", "--json"]
    once = runner.invoke(
        app,
        [
            *base,
            "-m",
            "deit-nano-elliptical",
            "-m",
            "deit-nano",
            "--elliptical-layers",
            "2",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert once.exit_code == 0, once.output
    models = json.loads((tmp_path / "a" / "run.json").read_text())["models"]
    assert models["deit-nano-elliptical"]["config"]["elliptical_layers"] == [2]
    assert models["deit-nano"]["config"]["elliptical_layers"] == []
    per_model = runner.invoke(
        app,
        [
            *base,
            "-m",
            "deit-nano-elliptical",
            "-m",
            "deit-nano",
            "--elliptical-layers",
            "1",
            "--elliptical-layers",
            "-",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert per_model.exit_code == 0, per_model.output
    assert json.loads((tmp_path / "b" / "run.json").read_text())["models"]["deit-nano-elliptical"]["config"][
        "elliptical_layers"
    ] == [1]
    # other layers, other logits: the unit is not reused from the run with layer 2
    again = runner.invoke(
        app, [*base, "-m", "deit-nano-elliptical", "--elliptical-layers", "1", "--out", str(tmp_path / "a")]
    )
    assert "1 units computed" in again.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-m", "deit-nano-elliptical", "--elliptical-layers", "5"], "out of range"),
        (
            ["-m", "deit-nano", "-m", "deit-nano-elliptical", "--elliptical-layers", "1", "--elliptical-layers", "2"],
            "not elliptical",
        ),
        (
            [
                "-m",
                "deit-nano",
                "-m",
                "deit-nano-elliptical",
                "-m",
                "deit-micro",
                "--elliptical-layers",
                "1",
                "--elliptical-layers",
                "2",
            ],
            "--elliptical-layers",
        ),
    ],
)
def test_bad_elliptical_layers_get_one_line(runner, tmp_path, args, fragment):
    result = runner.invoke(
        app, ["eval", "--data", "synthetic", "-n", "8", "--attack", "none", *args, "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.output
