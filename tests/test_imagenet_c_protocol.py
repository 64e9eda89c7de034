"""ImageNet-C as released (the JPEG quality-85 round trip), its raw variant, and ImageNet-3DCC folders."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ellrobust.cli import app
from ellrobust.core.workers import SHARED, WorkerPool
from ellrobust.corruptions import IMAGENET_3DCC, resolve_corruptions
from ellrobust.corruptions.generate import GeneratedSource, corrupt_image, jpeg_round_trip
from ellrobust.corruptions.protocol import CorruptionProtocol, resolve_protocol
from ellrobust.data import load_dataset, select_indices
from ellrobust.data.image_store import StorePlan, allocate, fill
from ellrobust.engine.runner import EvalConfig, Evaluation, RunContext


def pil_q85(image: np.ndarray) -> np.ndarray:
    """What make_imagenet_c.py writes for a uint8 image (``save(..., quality=85, optimize=True)``), decoded by PIL."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=85, optimize=True)
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A smooth colourful 40×48 image (JPEG changes it, but not beyond recognition)."""
    y, x = np.mgrid[0:40, 0:48]
    return np.stack([x * 5, y * 6, (x + y) * 3], axis=-1).astype(np.uint8)


def test_jpeg_round_trip_is_pils_quality_85_encode_and_decode(image):
    out = jpeg_round_trip(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out, pil_q85(image))  # bit for bit
    assert not np.array_equal(out, image)  # lossy: the round trip is not a no-op


@pytest.mark.parametrize(("name", "severity"), [("contrast", 3), ("gaussian_noise", 2), ("pixelate", 1)])
def test_imagenet_c_is_the_truncated_corruption_through_jpeg(image, name, severity):
    from imagecorruptions.corruptions import contrast

    raw = corrupt_image(image, name, severity, 7, protocol="imagenet-c-raw")
    released = corrupt_image(image, name, severity, 7, protocol="imagenet-c")
    assert np.array_equal(released, pil_q85(raw))
    assert np.array_equal(corrupt_image(image, name, severity, 7), released)  # the default is the released protocol
    if name == "contrast":  # make_imagenet_c.py: np.uint8(float image), a truncation, then the JPEG
        floats = contrast(Image.fromarray(image), severity)
        assert np.array_equal(released, pil_q85(np.uint8(floats)))
        assert not np.array_equal(np.uint8(floats), np.rint(floats).astype(np.uint8))  # rounding would differ


def test_auto_picks_cifar_10_c_for_small_images_and_released_imagenet_c_otherwise():
    assert resolve_protocol("auto", 32) is CorruptionProtocol.CIFAR_10_C
    assert resolve_protocol("auto", 224) is CorruptionProtocol.IMAGENET_C
    assert resolve_protocol("imagenet-c-raw", 224) is CorruptionProtocol.IMAGENET_C_RAW


def _context(cache: Path, **config) -> RunContext:
    """A run context on 4 synthetic (32 px) images with its image store filled inline."""
    data = load_dataset("synthetic")
    cfg = EvalConfig(models=("deit-nano",), dataset="synthetic", n=4, cache_dir=str(cache), **config)
    indices = select_indices(len(data), 4, cfg.seed)
    store, todo = allocate(
        data.dataset, indices, data.digest, data.spec.pixel_dtype, StorePlan(1 << 30, folder=Path(tempfile.mkdtemp()))
    )
    pool = WorkerPool(0, {"dataset": data.dataset, "store": store, "indices": indices})
    fill(store, todo, pool)
    return RunContext(cfg, data, indices, {}, lambda event: None, store=store, pool=pool)


def test_the_generator_records_the_protocol_and_keys_its_cache_by_it(tmp_path):
    released = GeneratedSource(_context(tmp_path, corruption_protocol="imagenet-c"))
    raw = GeneratedSource(_context(tmp_path, corruption_protocol="imagenet-c-raw"))
    assert released.params == {"protocol": "imagenet-c", "jpeg_quality": 85}
    assert raw.params == {"protocol": "imagenet-c-raw"}
    assert released.cache.path("fog", 1, [0, 1]) != raw.cache.path("fog", 1, [0, 1])
    # the tasks the workers run corrupt and round-trip the image themselves
    SHARED["store"] = released.ctx.store
    try:
        task = released.batch_plan("fog", 2, [0]).tasks[0]
        twin = raw.batch_plan("fog", 2, [0]).tasks[0]
        assert np.array_equal(task()[0], jpeg_round_trip(twin()[0]))
    finally:
        del SHARED["store"]


def test_run_json_and_rows_say_the_resolved_protocol(tmp_path):
    cfg = EvalConfig(
        models=("deit-nano",),
        dataset="synthetic",
        n=4,
        corruptions=("contrast",),
        severities=(1,),
        corruption_protocol="imagenet-c",
        sanity=False,
        workers=0,
    )
    table = Evaluation(cfg, tmp_path / "r").run().table
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["corruption_protocol"] == "imagenet-c" and meta["config"]["corruption_protocol"] == "imagenet-c"
    rows = table[table.metric == "corruption_accuracy"]
    assert all(json.loads(p)["jpeg_quality"] == 85 for p in rows.params)


def test_a_bad_protocol_lists_the_raw_variant(runner, tmp_path):
    result = runner.invoke(
        app, ["eval", "-m", "deit-nano", "--corruption", "fog", "--corruption-protocol", "jpeg", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "imagenet-c-raw" in errors[0], result.output


# --- ImageNet-3DCC -----------------------------------------------------------------------------------


def write_3dcc(tmp_path: Path, names=("near_focus", "fog_3d"), extra=()) -> tuple[Path, Path]:
    """A clean val folder (2 classes × 2 images) and an ImageNet-3DCC twin of severity 1 (224 px JPEGs)."""
    rng = np.random.default_rng(0)
    val, root = tmp_path / "val", tmp_path / "3dcc"
    for wnid in ("n01", "n02"):
        (val / wnid).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(val / wnid / f"img{k}.JPEG")
            for name in (*names, *extra):
                folder = root / name / "1" / wnid
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / f"img{k}.JPEG")
    return val, root


def test_3dcc_names_are_known_and_listed(runner):
    assert resolve_corruptions(["3dcc"]) == tuple(IMAGENET_3DCC.names())
    assert len(IMAGENET_3DCC) == 12 and "h265_crf" in IMAGENET_3DCC
    listed = runner.invoke(app, ["attacks", "--json"])
    assert {"near_focus", "bit_error"} <= {c["name"] for c in json.loads(listed.output)["corruptions"]}


def test_a_3dcc_folder_is_read_with_its_names_and_gets_no_alexnet_ce(tmp_path):
    val, root = write_3dcc(tmp_path, extra=("fog",))
    cfg = EvalConfig(
        models=("deit-nano",),
        dataset="imagefolder",
        data_root=str(val),
        corruptions=("near_focus", "fog_3d", "fog"),
        severities=(1,),
        corruption_source=str(root),
        sanity=False,
        workers=0,
    )
    table = Evaluation(cfg, tmp_path / "r").run().table
    accuracy = table[(table.metric == "corruption_accuracy") & table.severity.notna()]
    assert set(accuracy.method) == {"near_focus", "fog_3d", "fog"}
    ce = table[table.metric == "ce"]
    assert set(ce.method) == {"fog"}  # AlexNet has errors on ImageNet-C's corruptions only
    mce = table[table.metric == "mce"]
    assert len(mce) == 1 and json.loads(mce.params.iloc[0])["corruptions"] == ["fog"]


def test_a_3dcc_only_folder_names_its_source(runner, tmp_path):
    val, root = write_3dcc(tmp_path)
    args = ["eval", "-m", "deit-nano", "--data", "imagefolder", "--data-root", str(val), "--attack", "none"]
    args += ["--corruption", "near_focus,fog_3d", "--severity", "1", "--corruption-root", str(root)]
    result = runner.invoke(app, [*args, "--no-sanity", "--workers", "0", "--json", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    table = pd.DataFrame(json.loads(result.stdout))
    rows = table[table.metric == "corruption_accuracy"]
    assert set(rows.method) == {"near_focus", "fog_3d"}
    assert {json.loads(p)["source"] for p in rows.params} == {"imagenet-3dcc"}
    assert not table.metric.isin(["ce", "mce"]).any()


def test_3dcc_corruptions_are_not_generated(runner, tmp_path):
    args = ["eval", "-m", "deit-nano", "--n", "4", "--corruption", "flash", "--workers", "0", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'flash' is an ImageNet-3DCC corruption" in errors[0], result.output
    assert not any(tmp_path.iterdir())  # refused with the request, before any model or image was loaded
