"""ImageNet-C corruptions: the registry, reproducible generation, -C folders, CE/mCE and the CLI."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ellrobust.cli import app
from ellrobust.core.errors import UsageError
from ellrobust.core.workers import WorkerPool
from ellrobust.corruptions import CORRUPTIONS, CorruptionSet, names_in, resolve_corruptions
from ellrobust.corruptions.cache import ChunkCache
from ellrobust.corruptions.generate import corrupt_image, corrupt_tensor, image_seed, to_uint8
from ellrobust.data import load_dataset, select_indices
from ellrobust.data.image_store import StorePlan, allocate, fill
from ellrobust.engine.runner import EvalConfig, Evaluation, RunContext
from ellrobust.stats.corruption_error import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    corruption_error,
    mean_corruption_error,
    relative_corruption_error,
)

SEVERITIES = (1, 2, 3, 4, 5)
MODELS = ("deit-nano", "deit-nano-elliptical")


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def colourful(synthetic) -> torch.Tensor:
    """A 32 px RGB test image with colour (``saturate`` leaves grey images such as digits unchanged)."""
    return synthetic.dataset[0][0]


def unit_extras(run_dir) -> list[dict]:
    return [json.loads(p.read_text())["extra"] for p in sorted((run_dir / "units").glob("corruption_*.json"))]


def make_context(data, n=None, indices=None, **config) -> RunContext:
    """A run context with its image store filled inline (no worker processes)."""
    cfg = EvalConfig(models=MODELS, dataset=data.spec.name, n=n, **config)
    indices = select_indices(len(data), n, cfg.seed) if indices is None else indices
    store, todo = allocate(
        data.dataset, indices, data.digest, data.spec.pixel_dtype, StorePlan(1 << 30, folder=Path(tempfile.mkdtemp()))
    )
    pool = WorkerPool(0, {"dataset": data.dataset, "store": store, "indices": indices})
    fill(store, todo, pool)
    return RunContext(cfg, data, indices, {}, lambda event: None, store=store, pool=pool)


def source_batches(source, ctx, corruption, severity):
    """Every batch plan of one corruption and severity, run inline: (images float NCHW, images generated)."""
    images, made = [], 0
    for _, chunk in ctx.owned_batches():
        plan = source.batch_plan(corruption, severity, chunk)
        batch = np.concatenate([task() for task in plan.tasks])
        plan.finish(batch, ctx.store.labels[chunk])
        images.append(batch)
        made += plan.generated
    return torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).float() / 255, made


# --- the registry -----------------------------------------------------------------------------------


def test_registry_has_the_15_benchmark_and_4_extra_corruptions():
    assert len(names_in(CorruptionSet.BENCHMARK)) == 15 and len(names_in(CorruptionSet.EXTRA)) == 4
    assert names_in(CorruptionSet.BENCHMARK) == tuple(ALEXNET_ERRORS)
    assert {c.group for _, c in CORRUPTIONS.items()} == {"noise", "blur", "weather", "digital", "extra"}
    assert all(c.set in ("benchmark", "extra") and str(c.set) == c.set.value for _, c in CORRUPTIONS.items())


def test_names_resolve_sets_and_validate():
    assert resolve_corruptions(["all"]) == names_in(CorruptionSet.BENCHMARK)
    assert resolve_corruptions(["extra"]) == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert resolve_corruptions(["fog", "Contrast", "fog"]) == ("fog", "contrast")
    with pytest.raises(UsageError, match="'fog'"):
        resolve_corruptions(["fogg"])


# --- generation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_corruption_keeps_shape_and_range_changes_the_image_and_is_seeded(name, severity, colourful):
    seed = image_seed(0, name, severity, 7)
    out = corrupt_tensor(colourful, name, severity, seed)
    assert out.shape == colourful.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert not torch.equal(out, torch.from_numpy(to_uint8(colourful)).permute(2, 0, 1).float() / 255)
    assert torch.equal(out, corrupt_tensor(colourful, name, severity, seed))


@pytest.mark.parametrize("name", ["glass_blur", "impulse_noise", "gaussian_noise", "frost"])
def test_the_seed_reaches_every_random_generator_and_numpy_state_is_restored(name, colourful):
    """glass_blur draws inside numba and impulse_noise in scikit-image: both must follow the seed."""
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = corrupt_tensor(colourful, name, 3, seed=1)
    assert np.array_equal(np.random.get_state()[1], before)
    assert not torch.equal(a, corrupt_tensor(colourful, name, 3, seed=2))


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", ["contrast", "brightness", "pixelate", "jpeg_compression"])
def test_deterministic_corruptions_equal_the_library_output(name, severity, colourful):
    from imagecorruptions import corrupt

    image = to_uint8(colourful)
    assert np.array_equal(
        corrupt_image(image, name, severity, seed=5, protocol="imagenet-c-raw"),
        corrupt(image, severity=severity, corruption_name=name),
    )


def test_image_seed_depends_on_every_part():
    seeds = {
        image_seed(*k)
        for k in [(0, "fog", 1, 0), (1, "fog", 1, 0), (0, "snow", 1, 0), (0, "fog", 2, 0), (0, "fog", 1, 1)]
    }
    assert len(seeds) == 5 and all(0 <= s < 2**32 for s in seeds)
    assert image_seed(0, "fog", 1, 0) == image_seed(0, "fog", 1, 0)


def test_images_do_not_depend_on_batching_and_the_cache_returns_them(synthetic, tmp_path):
    from ellrobust.corruptions.generate import GeneratedSource

    indices = [3, 9, 10, 20, 41]

    def batches(batch_size, cache=None):
        ctx = make_context(synthetic, indices=indices, batch_size=batch_size, cache_dir=cache)
        return source_batches(GeneratedSource(ctx), ctx, "shot_noise", 2)

    x1, made = batches(5)
    x2, _ = batches(2)
    assert torch.equal(x1, x2) and made == 5
    assert batches(2, str(tmp_path))[1] == 5
    x3, made_again = batches(2, str(tmp_path))
    assert made_again == 0 and torch.equal(x3, x1)
    cache = ChunkCache.for_run(tmp_path, data_digest=synthetic.digest, run_seed=0, library="test")
    other = ChunkCache.for_run(tmp_path, data_digest=synthetic.digest, run_seed=1, library="test")
    assert other.path("shot_noise", 2, indices[:2]) != cache.path("shot_noise", 2, indices[:2])


# --- metrics ---------------------------------------------------------------------------------------


def test_alexnet_constants_average_to_the_published_per_corruption_errors():
    published = {"gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
                 "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
                 "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
 "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
                 "pixelate": 0.717840, "jpeg_compression": 0.606500}  # fmt: skip
    assert {c: round(sum(e) / 5, 6) for c, e in ALEXNET_ERRORS.items()} == published


def test_ce_mce_and_relative_mce_against_hand_computed_values():
    # model errors on two corruptions at 2 severities; reference errors; clean errors 0.1 and 0.2
    mine = {"a": [0.2, 0.4], "b": [0.5, 0.5]}
    ref = {"a": [0.4, 0.8], "b": [0.5, 1.0]}
    assert corruption_error(mine["a"], ref["a"]) == pytest.approx(0.6 / 1.2)
    assert corruption_error(mine["b"], ref["b"]) == pytest.approx(1.0 / 1.5)
    assert mean_corruption_error([0.5, 2 / 3]) == pytest.approx(7 / 12)
    assert corruption_error(mine["a"]) == pytest.approx(0.3)  # unnormalised: the mean error
    # relative: (0.1 + 0.3) / (0.2 + 0.6) and (0.4 + 0.4) / (0.3 + 0.8)
    assert relative_corruption_error(mine["a"], 0.1, ref["a"], 0.2) == pytest.approx(0.5)
    assert relative_corruption_error(mine["b"], 0.1, ref["b"], 0.2) == pytest.approx(0.8 / 1.1)
    assert relative_corruption_error(mine["a"], 0.1) == pytest.approx(0.2)
    assert math.isnan(corruption_error([0.1], [0.0])) and math.isnan(relative_corruption_error([0.1], 0.1, [0.2], 0.3))
    # AlexNet normalises itself to exactly 1
    fog = ALEXNET_ERRORS["fog"]
    assert corruption_error(fog, fog) == pytest.approx(1.0)
    assert relative_corruption_error(fog, ALEXNET_CLEAN_ERROR, fog, ALEXNET_CLEAN_ERROR) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        corruption_error([0.1, 0.2], [0.3])


# --- the engine stage ------------------------------------------------------------------------------


def test_two_models_share_each_corrupted_batch_and_get_every_aggregate(tmp_path):
    cfg = EvalConfig(
        models=MODELS, dataset="synthetic", n=16, batch_size=8, corruptions=("fog", "contrast"), severities=(1, 3)
    )
    run = Evaluation(cfg, tmp_path / "run").run()
    df = run.table
    # each image corrupted once per unit, for both models
    assert [e["generated_images"] for e in unit_extras(run.run_dir)] == [16] * 4
    acc = df[df.metric == "corruption_accuracy"]
    assert len(acc) == 2 * 2 * (2 + 1)  # models × corruptions × (severities + average)
    per_sev = acc.dropna(subset=["severity"])
    examples = run.examples[run.examples.method == "fog"]
    for (model, sev), value in per_sev[per_sev.method == "fog"].set_index(["model", "severity"]).value.items():
        outcomes = examples[(examples.model == model) & (examples.severity == sev)].correct
        assert len(outcomes) == 16 and value == pytest.approx(outcomes.mean())
    # the engine's paired comparison, per corruption and severity
    paired = df[(df.metric == "accuracy_difference") & (df.method == "fog")]
    assert sorted(paired.severity.tolist()) == [1, 3]
    # CE / mCE by hand from the table, unnormalised and relative to the plain DeiT
    err = {(r.model, r.method, r.severity): 1 - r.value for r in per_sev.itertuples()}
    clean_err = {r.model: 1 - r.value for r in df[df.metric == "clean_accuracy"].itertuples()}
    ce = df[df.metric == "ce"]
    params = ce.params.map(json.loads)
    none = ce[params.map(lambda p: p["normalization"] == "none")]
    base = ce[params.map(lambda p: p["normalization"] == "baseline")]
    assert set(base.baseline) == {"deit-nano"} and none.baseline.isna().all()
    for r in none.itertuples():
        assert r.value == pytest.approx((err[(r.model, r.method, 1)] + err[(r.model, r.method, 3)]) / 2)
    for r in base.itertuples():
        expected = corruption_error(
            [err[(r.model, r.method, s)] for s in (1, 3)], [err[("deit-nano", r.method, s)] for s in (1, 3)]
        )
        assert r.value == pytest.approx(expected, nan_ok=True)
    mce = df[df.metric == "mce"]
    assert len(mce) == 4 and set(mce.method) == {"mce"}
    for r in mce[mce.params.map(lambda p: json.loads(p)["normalization"] == "none")].itertuples():
        assert r.value == pytest.approx(none[none.model == r.model].value.mean())
    rel = df[(df.metric == "relative_mce") & df.baseline.isna()]
    for r in rel.itertuples():
        added = [(err[(r.model, c, 1)] + err[(r.model, c, 3)]) / 2 - clean_err[r.model] for c in ("fog", "contrast")]
        assert r.value == pytest.approx(sum(added) / 2)
    # a rerun reuses every unit; a new run folder with a cache generates nothing
    again = Evaluation(cfg, tmp_path / "run").run()
    assert again.computed == 0


def test_cache_and_workers_reproduce_the_same_images(tmp_path):
    common = dict(
        models=("deit-nano",), dataset="synthetic", n=12, batch_size=4, corruptions=("glass_blur",), severities=(2,)
    )
    plain = Evaluation(EvalConfig(**common), tmp_path / "plain").run()
    cached = Evaluation(EvalConfig(**common, cache_dir=str(tmp_path / "cache"), workers=2), tmp_path / "first").run()
    reused = Evaluation(EvalConfig(**common, cache_dir=str(tmp_path / "cache")), tmp_path / "second").run()
    assert [e["generated_images"] for e in unit_extras(cached.run_dir)] == [12]
    assert [e["generated_images"] for e in unit_extras(reused.run_dir)] == [0]
    outcomes = [r.examples[r.examples.method == "glass_blur"].correct.tolist() for r in (plain, cached, reused)]
    assert outcomes[0] == outcomes[1] == outcomes[2]


# --- precomputed folders ---------------------------------------------------------------------------


def write_cifar_c(root, data, corruptions=("fog",), severities=5) -> np.ndarray:
    """A CIFAR-10-C-shaped folder for ``data``: block s of each array holds the images + 10·s."""
    clean = (
        (torch.stack([data.dataset[i][0] for i in range(len(data))]) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    )
    labels = data.dataset.tensors[1].numpy()
    root.mkdir(exist_ok=True)
    for name in corruptions:
        np.save(
            root / f"{name}.npy",
            np.concatenate(
                [np.clip(clean.astype(int) + 10 * s, 0, 255).astype(np.uint8) for s in range(1, severities + 1)]
            ),
        )
    np.save(root / "labels.npy", np.tile(labels, 5))
    return clean


def test_cifar10_c_layout_reads_the_selected_rows_of_each_severity(synthetic, tmp_path):
    from ellrobust.corruptions.sources import open_source

    clean = write_cifar_c(tmp_path / "c", synthetic)
    ctx = make_context(synthetic, n=10, corruption_source=str(tmp_path / "c"), batch_size=4)
    source = open_source(ctx)
    assert source.label == "cifar10-c" and not source.imagenet
    source.check(("fog",), SEVERITIES)
    x, made = source_batches(source, ctx, "fog", 3)
    expected = np.clip(clean[ctx.indices].astype(int) + 30, 0, 255)
    assert torch.allclose(x, torch.from_numpy(expected).permute(0, 3, 1, 2).float() / 255) and made == 0
    with pytest.raises(UsageError, match="no 'snow'"):
        source.check(("snow",), (1,))


def test_cifar10_c_with_other_labels_is_refused(synthetic, tmp_path):
    from ellrobust.corruptions.sources import open_source

    write_cifar_c(tmp_path / "c", synthetic)
    np.save(tmp_path / "c" / "labels.npy", (np.load(tmp_path / "c" / "labels.npy") + 1) % 10)
    with pytest.raises(UsageError, match="labels"):
        open_source(make_context(synthetic, corruption_source=str(tmp_path / "c")))


def write_imagenet_c(tmp_path, corruption="fog", severities=(1, 2)):
    """A clean val folder (2 classes × 2 images) and its -C twin (224 px files, one 300 px file)."""
    rng = np.random.default_rng(0)
    val, root = tmp_path / "val", tmp_path / "imagenet-c"
    for wnid in ("n01", "n02"):
        for k in range(2):
            (val / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(val / wnid / f"img{k}.JPEG")
            for s in severities:
                (root / corruption / str(s) / wnid).mkdir(parents=True, exist_ok=True)
                size = 300 if (wnid, k) == ("n02", 1) else 224
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / corruption / str(s) / wnid / f"img{k}.png"
                )
    return val, root


def test_imagenet_c_layout_pairs_files_with_the_clean_selection(tmp_path):
    from ellrobust.corruptions.sources import open_source

    val, root = write_imagenet_c(tmp_path)
    data = load_dataset("imagefolder", root=val)
    ctx = make_context(data, corruption_source=str(root), batch_size=3)
    source = open_source(ctx)
    assert source.label == "imagenet-c" and source.imagenet
    x, _ = source_batches(source, ctx, "fog", 2)
    assert x.shape == (4, 3, 224, 224) and ctx.store.labels.tolist() == [0, 0, 1, 1]
    first = np.array(Image.open(root / "fog" / "2" / "n01" / "img0.png"))
    assert torch.allclose(x[0], torch.from_numpy(first).permute(2, 0, 1).float() / 255)  # ToTensor only
    with pytest.raises(UsageError, match="severity 3"):
        source.check(("fog",), (1, 3))
    with pytest.raises(UsageError, match="no 'snow'"):
        source.check(("snow",), (1,))


def test_imagenet_c_run_is_normalised_by_alexnet(tmp_path):
    val, root = write_imagenet_c(tmp_path)
    cfg = EvalConfig(
        models=("deit-nano",),
        dataset="imagefolder",
        data_root=str(val),
        corruptions=("fog",),
        severities=(1, 2),
        corruption_source=str(root),
    )
    df = Evaluation(cfg, tmp_path / "run").run().table
    acc = df[(df.metric == "corruption_accuracy") & df.severity.notna()].set_index("severity").value
    ce = df[df.metric == "ce"]
    assert len(ce) == 1 and json.loads(ce.params.iloc[0])["normalization"] == "alexnet"
    assert ce.value.iloc[0] == pytest.approx(
        (2 - acc[1] - acc[2]) / (ALEXNET_ERRORS["fog"][0] + ALEXNET_ERRORS["fog"][1])
    )
    assert df[df.metric == "mce"].value.iloc[0] == pytest.approx(ce.value.iloc[0])
    assert (
        df[df.metric.isin(["ce", "mce", "relative_mce"])].params.map(lambda p: json.loads(p)["normalization"])
        == "alexnet"
    ).all()


# --- the command line ------------------------------------------------------------------------------

CLI = ["eval", "--data", "synthetic", "-m", "deit-nano", "--n", "8"]


def assert_one_line_error(result, *fragments: str) -> None:
    text = result.output  # stdout and stderr, interleaved
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0]


def test_cli_runs_and_prints_mce(runner, tmp_path):
    result = runner.invoke(
        app,
        [
            *CLI,
            "-m",
            "deit-nano-elliptical",
            "--corruption",
            "contrast",
            "--severity",
            "2",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    df = pd.DataFrame(json.loads(result.stdout))
    assert set(df[df.metric == "mce"].model) == set(MODELS)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--corruption", "fogg"], ["unknown corruption 'fogg'", "'fog'"]),
        (["--corruption", "fog", "--severity", "0"], ["--severity", "outside 1–5"]),
        (["--corruption", "fog", "--severity", "6"], ["--severity", "outside 1–5"]),
    ],
)
def test_cli_rejects_bad_corruption_requests(runner, tmp_path, args, fragments):
    assert_one_line_error(runner.invoke(app, [*CLI, *args, "--out", str(tmp_path / "r")]), *fragments)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--corruption", "snow"], "no 'snow'"), (["--corruption", "fog", "--severity", "1-5"], "severity 4 is missing")],
)
def test_cli_rejects_a_c_folder_without_the_corruption_or_severity(runner, synthetic, tmp_path, args, fragment):
    write_cifar_c(tmp_path / "c", synthetic, severities=3)
    result = runner.invoke(app, [*CLI, *args, "--corruption-root", str(tmp_path / "c"), "--out", str(tmp_path / "r")])
    assert_one_line_error(result, fragment)


def test_cli_rejects_a_c_folder_of_unknown_layout(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, [*CLI, "--corruption", "fog", "--corruption-root", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]
    )
    assert_one_line_error(result, "matches no known layout")
