"""The results layer: typed rows and their key, the per-example table, the schema, and the one migration."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from ellrobust.attacks import make_request
from ellrobust.core.errors import UsageError
from ellrobust.engine.runner import EvalConfig, Evaluation
from ellrobust.results import (
    COLUMNS,
    KEY_FIELDS,
    METRICS,
    SCHEMA_VERSION,
    Metric,
    Outcomes,
    Provenance,
    Row,
    complete_table,
    examples_frame,
    load_examples,
    load_results,
    migrate_records,
    row_key,
    table,
    to_frame,
)


def test_the_columns_are_the_row_and_its_provenance():
    assert set(COLUMNS) == {f.name for f in fields(Row)} | {f.name for f in fields(Provenance)}
    assert set(KEY_FIELDS) < set(COLUMNS) and "metric" not in KEY_FIELDS and "value" not in KEY_FIELDS


def test_a_row_only_takes_metrics_of_the_vocabulary():
    row = Row("m", "robust_accuracy", 0.5, "pgd", eps=2 / 255)
    assert row.metric is Metric.ROBUST_ACCURACY and row.metric.ci_low is Metric.ROBUST_ACCURACY_CI_LOW
    assert Metric.TOKEN_COSINE.difference.ci_high is Metric.TOKEN_COSINE_DIFFERENCE_CI_HIGH
    with pytest.raises(ValueError):
        Row("m", "robust_acc", 0.5, "pgd")
    assert "sanity_robust_le_clean" not in METRICS and "mcnemar_p_adjusted" in METRICS


def test_the_key_is_the_same_after_a_csv_round_trip(tmp_path):
    rows = [
        Row(
            "a",
            Metric.ROBUST_ACCURACY,
            0.4,
            "pgd",
            '{"steps": 10, "alpha": "0.25*eps"}',
            eps=1 / 255,
            m_grad="detach",
            precision="fp32",
        ),
        Row("a", Metric.CORRUPTION_ACCURACY, 0.7, "fog", severity=3),
        Row("a", Metric.TOKEN_COSINE, 0.2, "collapse", layer=4, precision="fp32"),
        Row("a", Metric.ACCURACY_DIFFERENCE, 0.01, "clean", baseline="b"),
    ]
    prov = {"a": Provenance("abc", "digits", "test", 10, 0, "0", "0")}
    df = table(rows, prov)
    df.to_csv(tmp_path / "t.csv", index=False)
    again = to_frame(pd.read_csv(tmp_path / "t.csv").to_dict(orient="records"))
    assert [row_key(r) for r in df.to_dict(orient="records")] == [row_key(r) for r in again.to_dict(orient="records")]
    assert [row_key(r.as_dict()) for r in rows] == [row_key(r) for r in df.to_dict(orient="records")]
    assert row_key(rows[1].as_dict())[5] == 3 and isinstance(row_key(rows[2].as_dict())[6], int)


def test_text_fields_that_do_not_apply_are_shown_as_they_always_were():
    """``m_grad`` is "" where no mode applies, ``precision`` and ``baseline`` are missing (null in JSON)."""
    df = table([Row("a", Metric.CLEAN_ACCURACY, 1.0, "clean")], {"a": Provenance("x", "d", None, 1, 0, "0", "0")})
    assert df["m_grad"].tolist() == [""] and df["baseline"].isna().all() and df["precision"].isna().all()
    assert Row(**Row("a", Metric.CLEAN_ACCURACY, 1.0, "clean").as_dict()) == Row(
        "a", Metric.CLEAN_ACCURACY, 1.0, "clean"
    )


def test_the_examples_table_holds_one_row_per_image_and_outcome():
    outcomes = [
        Outcomes("a", "pgd", "{}", 0.1, None, "detach", "fp32", [1, 0, 1]),
        Outcomes("b", "clean", correct=[0, 0, 1]),
    ]
    df = examples_frame(outcomes, [7, 3, 5])
    assert list(df.columns) == [
        "model",
        "method",
        "params",
        "eps",
        "severity",
        "m_grad",
        "precision",
        "index",
        "correct",
        "prediction",
        "linf",
        "l2",
        "eps_star",
        "censored",
        "confidence",
        "top5",
    ]
    assert df["index"].tolist() == [7, 3, 5, 7, 3, 5] and df["correct"].tolist() == [1, 0, 1, 0, 0, 1]
    assert df["prediction"].isna().all() and df["linf"].isna().all() and df["eps_star"].isna().all()  # none recorded


# --- the migration --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = EvalConfig(
        models=("deit-elliptical", "deit"), n=30, attacks=(make_request("fgsm"),), eps=(2 / 255, 8 / 255), sanity=False
    )
    Evaluation(cfg, out).run()
    return out


def test_a_run_folder_loads_as_written(run):
    written = pd.read_csv(run / "results.csv")
    loaded = load_results(run)
    assert len(loaded) == len(written)
    assert json.loads((run / "run.json").read_text())["schema_version"] == SCHEMA_VERSION
    examples = load_examples(run)
    assert len(examples) == 30 * 6 and set(examples["correct"]) <= {0, 1}  # 2 models × (clean + 2 budgets)


def test_an_older_table_gets_the_intervals_and_the_holm_p_the_engine_computes(run):
    full = load_results(run)
    # calibration intervals need the per-image confidences, which a table does not hold: an older
    # table never had them and does not regain them
    full = full[~full["metric"].str.contains("calibration_error")].reset_index(drop=True)
    companions = full["metric"].str.endswith(("_ci_low", "_ci_high")) & full["baseline"].isna()
    old = full[~companions & (full["metric"] != "mcnemar_p_adjusted")].reset_index(drop=True)
    completed = complete_table(old)
    key = ["model", "baseline", "method", "eps", "metric"]
    expected = full.sort_values(key, na_position="first").reset_index(drop=True)
    got = completed.sort_values(key, na_position="first").reset_index(drop=True)
    assert len(got) == len(expected)
    np.testing.assert_allclose(
        got["value"].to_numpy(float), expected["value"].to_numpy(float), rtol=1e-12, equal_nan=True
    )
    assert complete_table(full).equals(full)  # a current table is left as it is


def test_records_of_0_1_get_the_precision_their_measurements_ran_in():
    old = [
        {"model": "a", "method": "clean", "metric": "clean_accuracy", "value": 1.0, "n": 5, "dataset": "d"},
        {
            "model": "a",
            "method": "pgd",
            "eps": 0.01,
            "m_grad": "detach",
            "metric": "robust_accuracy",
            "value": 0.5,
            "n": 5,
            "dataset": "d",
        },
        {"model": "a", "method": "sanity", "metric": "sanity_robust_le_clean", "value": 1.0, "n": 5, "dataset": "d"},
        {
            "model": "a",
            "method": "collapse",
            "layer": 2,
            "metric": "token_cosine",
            "value": 0.3,
            "n": 5,
            "dataset": "d",
        },
        {
            "model": "a",
            "method": "fog",
            "severity": 2,
            "metric": "corruption_accuracy",
            "value": 0.8,
            "n": 5,
            "dataset": "d",
        },
    ]
    assert [r["precision"] for r in migrate_records(old)] == [None, "fp32", "fp32", "fp32", None]
    current = {**old[1], "precision": "bf16"}
    assert migrate_records([current])[0]["precision"] == "bf16"


def test_a_table_of_a_newer_schema_is_refused(run, tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "results.csv").write_bytes((run / "results.csv").read_bytes())
    meta = json.loads((run / "run.json").read_text())
    (newer / "run.json").write_text(json.dumps({**meta, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UsageError, match="newer than this ellrobust"):
        load_results(newer)
    (newer / "run.json").write_text(json.dumps({**meta, "schema_version": 2}))
    assert len(load_results(newer)) == len(load_results(run))  # an older one is read
