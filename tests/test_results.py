"""The results layer: typed rows and their key, the per-example table, and the schema."""

from __future__ import annotations

import json
from dataclasses import fields

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
    examples_frame,
    load_examples,
    load_results,
    row_key,
    table,
    to_frame,
)


def test_the_columns_are_the_row_and_its_provenance():
    assert set(COLUMNS) == {f.name for f in fields(Row)} | {f.name for f in fields(Provenance)}
    assert set(KEY_FIELDS) < set(COLUMNS) and "metric" not in KEY_FIELDS and "value" not in KEY_FIELDS


def test_a_row_only_takes_metrics_of_the_vocabulary():
    row = Row("m", "robust_accuracy", 0.5, "pgd", eps=2 / 255)
    assert row.metric is Metric.ROBUST_ACCURACY and row.metric.ci_low is Metric.ROBUST_ACCURACY.ci_low
    assert Metric.TOKEN_COSINE.difference.ci_high is Metric.TOKEN_COSINE.difference.ci_high
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
        Outcomes(model="a", method="pgd", eps=0.1, m_grad="detach", precision="fp32", columns={"correct": [1, 0, 1]}),
        Outcomes(model="b", method="clean", columns={"correct": [0, 0, 1]}),
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
        "attacked_patch",
    ]
    assert df["index"].tolist() == [7, 3, 5, 7, 3, 5] and df["correct"].tolist() == [1, 0, 1, 0, 0, 1]
    assert df["attacked_patch"].tolist() == [""] * 6  # no patch attack: no patches
    assert df["prediction"].isna().all() and df["linf"].isna().all() and df["eps_star"].isna().all()  # none recorded


# --- the schema -----------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("version", [SCHEMA_VERSION - 1, SCHEMA_VERSION + 1, None])
def test_a_run_folder_of_another_schema_is_refused_naming_who_wrote_it(run, tmp_path, version):
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_bytes((run / "results.csv").read_bytes())
    meta = {**json.loads((run / "run.json").read_text()), "schema_version": version}
    meta["environment"] = {**meta["environment"], "ellrobust": "0.0.9"}
    (other / "run.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match=r"written by ellrobust 0\.0\.9 \((results schema|no results schema)") as info:
        load_results(other)
    assert f"reads schema {SCHEMA_VERSION} only: recompute it with the same command." in str(info.value)
