"""``eval --log tensorboard:DIR --log mlflow:URI``: every row of results.csv, read back from each tracker."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import ellrobust
from ellrobust.cli import app
from ellrobust.core.errors import UsageError
from ellrobust.report import trackers
from ellrobust.report.trackers import requested_trackers, scalar_names
from ellrobust.request.spec import Caller
from ellrobust.results import load_results, records

INSTALLED = [name for name in ("tensorboard", "mlflow") if importlib.util.find_spec(name) is not None]


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[Path, Path, str]:
    """A tiny run logged to every tracker installed here: the run folder, the trackers' root, eval's stderr."""
    if not INSTALLED:
        pytest.skip("neither tensorboard nor mlflow is installed")
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("trackers")
    args = ["eval", "-m", "deit-nano", "-m", "deit-nano-elliptical", "-d", "synthetic", "--attack", "fgsm,pgd"]
    args += ["--eps", "2/255,8/255", "--n", "8", "--out", str(root / "tiny")]
    targets = {"tensorboard": f"tensorboard:{root / 'tb'}", "mlflow": f"mlflow:file:{root / 'mlruns'}"}
    args += ["--log", ",".join(targets[name] for name in INSTALLED)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "tiny", root, result.stderr


def expected(run_dir: Path) -> dict[str, float]:
    rows = records(load_results(run_dir))
    values = [math.nan if r["value"] is None else r["value"] for r in rows]
    return dict(zip(scalar_names(rows), values, strict=True))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_tensorboard_holds_every_row_the_verdict_and_the_figures(logged):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, root, stderr = logged
    events = EventAccumulator(str(root / "tb" / "tiny"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    want = expected(run_dir)
    assert set(events.Tags()["scalars"]) == set(want) and len(want) > 20
    for name, value in want.items():
        (event,) = events.Scalars(name)
        assert event.step == 0 and same(event.value, float(np.float32(value))), name  # TensorBoard keeps float32
    (verdict,) = events.Tensors("verdict/text_summary")
    assert verdict.tensor_proto.string_val[0].decode().startswith("- **")
    assert "figures/robust_accuracy" in events.Tags()["images"]
    said = " ".join(stderr.split())  # rich wraps long lines
    assert f"logged: {len(want)} numbers, the verdict and 1 figure to TensorBoard {root / 'tb' / 'tiny'}" in said


def test_mlflow_file_store_holds_every_row_the_verdict_and_the_figures(logged, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir, root, _ = logged
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when asked to
    client = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("ellrobust").experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    want = expected(run_dir)
    assert set(run.data.metrics) == set(want)
    assert all(same(run.data.metrics[name], value) for name, value in want.items())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"verdict.md", "figures"}
    assert "figures/robust_accuracy.png" in {a.path for a in client.list_artifacts(run.info.run_id, "figures")}


def test_names_follow_the_documented_scheme():
    base = {"model": "deit-elliptical", "method": "pgd", "metric": "robust_accuracy", "eps": 8 / 255}
    rows = [
        {**base, "params": '{"steps": 10}', "m_grad": "detach"},
        {**base, "params": '{"steps": 20}', "m_grad": "detach"},
        {**base, "m_grad": "full", "precision": "bf16"},
        {"model": "a/b c", "baseline": "deit", "method": "ce", "metric": "mce", "severity": 3, "layer": 2},
        {"model": "..", "method": "clean", "metric": "clean_accuracy", "eps": 0.5 / 255},
    ]
    names = scalar_names(rows)
    assert names[0].startswith("robust_accuracy/deit-elliptical/pgd/eps255_8/m_grad_detach/params_")
    assert names[0] != names[1] and len(names[0].rsplit("_", 1)[1]) == 8
    assert names[2] == "robust_accuracy/deit-elliptical/pgd/eps255_8/m_grad_full/precision_bf16"
    assert names[3] == "mce/a_b_c/ce/vs_deit/severity_3/layer_2"
    assert names[4] == "clean_accuracy/__/clean/eps255_0.5"
    assert scalar_names(rows[2:]) == names[2:]  # a row's name does not depend on the others unless they clash


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("wandb:x", "--log wandb:x: unknown tracker 'wandb'"),
        ("tensorboard", "--log takes SCHEME:WHERE"),
        ("tensorboard:", "--log takes SCHEME:WHERE"),
    ],
)
def test_a_bad_target_is_one_line_before_the_run(runner, tmp_path, value, needle):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["eval", "-m", "deit-nano", "-d", "synthetic", "--n", "2", "--out", str(out), "--log", value]
    )
    assert result.exit_code == 2 and result.output.startswith(f"error: {needle}"), result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r'log= mlflow:file:x needs the mlflow package; .*"ellrobust\[mlflow\]"'):
        requested_trackers("mlflow:file:x", Caller.PYTHON)


def test_python_takes_a_list_and_names_log_in_messages(tmp_path):
    found = requested_trackers(["tensorboard:a,mlflow:file:/b,c", "mlflow:d"], Caller.PYTHON)
    assert [str(t) for t in found] == ["tensorboard:a", "mlflow:file:/b,c", "mlflow:d"]
    with pytest.raises(UsageError, match="^log= takes SCHEME:WHERE"):
        ellrobust.evaluate(["deit-nano"], data="synthetic", n=2, out=tmp_path / "run", log=["x"])
    assert not (tmp_path / "run").exists()


def test_mlflow_uri_makes_local_stores_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert trackers.mlflow_uri("file:./mlruns") == (tmp_path / "mlruns").as_uri()
    assert trackers.mlflow_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert trackers.mlflow_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_a_tracker_failing_after_the_run_is_one_line_that_says_how_to_retry(logged, tmp_path):
    pytest.importorskip("mlflow")
    run_dir = logged[0]
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UsageError) as e:
        trackers.log_run(run_dir, (trackers.Tracker("mlflow", f"file:{blocked / 'mlruns'}"),))
    message = str(e.value)
    assert message.startswith(f"--log mlflow:file:{blocked / 'mlruns'}: logging failed (")
    assert f"the results are in {run_dir}" in message and "\n" not in message


def test_evaluate_logs_the_finished_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = ellrobust.evaluate(
        ["deit-nano"], data="synthetic", n=4, attacks="none", out=tmp_path / "run", log=f"tensorboard:{tmp_path / 'tb'}"
    )
    events = EventAccumulator(str(tmp_path / "tb" / "run"))
    events.Reload()
    assert len(events.Tags()["scalars"]) == len(results.table) > 0
