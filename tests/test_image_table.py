"""The per-image table: declared columns, one table per unit, saved and read back by a loop over columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ellrobust.engine.unit_store import UnitStore
from ellrobust.measures.collapse_probe import value_key
from ellrobust.results import (
    CORRECT,
    OWN,
    TRANSFERRED,
    ImageTable,
    Outcomes,
    Row,
    declare_column,
    example_columns,
    examples_frame,
)
from ellrobust.results.image_table import column
from ellrobust.run.units import Unit, UnitResult, transfer_params


def test_a_column_is_declared_once_and_a_family_member_has_its_family_declaration():
    assert column("prediction").dtype == np.int64 and column("prediction").example
    member = value_key("token_cosine", 3)  # the collapse measure declares a family per metric
    assert column(member).family and not column(member).example and column(member).name == "token_cosine"
    assert declare_column("prediction", np.int64, column("prediction").meaning, example=True) == column("prediction")
    with pytest.raises(ValueError, match="declared twice"):
        declare_column("prediction", np.float64, "something else")
    with pytest.raises(ValueError, match="not declared"):
        column("no_such_column")
    with pytest.raises(ValueError, match="not declared"):
        column("correct|3|")  # not a family
    with pytest.raises(ValueError, match="not bool, int64 or float64"):
        declare_column("label_text", str, "a string column")


def test_a_table_checks_its_columns_and_keeps_them_read_only():
    table = ImageTable.of("a", {CORRECT: [1, 0, 1], "token_cosine|later|": [0.5, None, 0.25]})
    assert table.column("a", CORRECT).dtype == bool
    assert np.isnan(table.column("a", "token_cosine|later|")[1])
    with pytest.raises(ValueError, match="has 2 values for 3 images"):
        table.put("a", {"prediction": [1, 2]})
    with pytest.raises(ValueError, match="not declared"):
        table.put("c", {CORRECT: [1, 0, 1], "made_up": [1, 2, 3]})
    assert table.models() == ["a"]  # a refused put leaves the table as it was
    with pytest.raises(ValueError, match="read-only"):
        table.column("a", CORRECT)[0] = False
    with pytest.raises(KeyError, match="prediction"):
        table.column("a", "prediction")
    assert table.get("b", CORRECT) is None and table.entry("b") == {}


def test_a_unit_file_round_trips_every_column_and_view(tmp_path):
    unit = Unit("attack", "a", "pgd", "{}", 2 / 255, None, "full", (), "fp32")
    table = ImageTable.of("a", {CORRECT: [1, 0], "prediction": [3, 7], "linf": [0.0, float("nan")]})
    table.put("b", {CORRECT: [0, 1], "prediction": [2, 7]}, TRANSFERRED)
    store = UnitStore(tmp_path)
    store.dir.mkdir()
    store.save("ab" * 8, unit, UnitResult(rows=[Row("a", "robust_accuracy", 0.5, "pgd")], per_image=table))
    back = store.load("ab" * 8, unit).per_image
    assert back.views() == [OWN, TRANSFERRED]
    assert back.column("a", CORRECT).tolist() == [True, False] and back.column("a", "prediction").tolist() == [3, 7]
    assert back.column("a", "linf")[0] == 0.0 and np.isnan(back.column("a", "linf")[1])
    assert back.entry("b", TRANSFERRED).keys() == {CORRECT, "prediction"}
    saved = json.loads(store.path("ab" * 8, unit).read_text())["per_image"]
    assert saved[OWN]["a"][CORRECT] == "10" and saved[OWN]["a"]["linf"] == [0.0, None]


def test_an_unknown_column_in_a_unit_file_makes_the_unit_run_again(tmp_path):
    unit = Unit("clean", "a", "clean")
    store = UnitStore(tmp_path)
    store.dir.mkdir()
    store.save("cd" * 8, unit, UnitResult(per_image=ImageTable.of("a", {CORRECT: [1]})))
    path = store.path("cd" * 8, unit)
    data = json.loads(path.read_text())
    data["per_image"][OWN]["a"]["made_up"] = [1]
    path.write_text(json.dumps(data))
    assert store.load("cd" * 8, unit) is None


def test_outcomes_come_from_the_table_by_view_transferred_first():
    unit = Unit("attack", "a", "pgd", '{"steps": 3}', 2 / 255, None, "full", (), "fp32")
    table = ImageTable.of("a", {CORRECT: [1, 0], "prediction": [3, 7], "token_cosine|later|": [0.1, 0.2]})
    table.put("b", {CORRECT: [0, 1], "prediction": [2, 7]}, TRANSFERRED)
    own, transferred = UnitResult(per_image=table).outcomes_of(unit)[::-1]
    assert transferred.model == "b" and transferred.params == transfer_params(unit) and transferred.m_grad == ""
    assert own.measurement == ("pgd", '{"steps": 3}', 2 / 255, None, "full", "fp32")
    frame = examples_frame([transferred, own], [5, 9])
    assert list(frame.columns) == list(example_columns())
    assert frame.prediction.tolist() == [2, 7, 3, 7] and frame.linf.isna().all()
    with pytest.raises(ValueError, match="no 'correct' column"):
        Outcomes(model="a", method="clean", columns={"prediction": [1]})
