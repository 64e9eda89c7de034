"""The results table as the judgements and the renderers read it: one text convention, companions, params.

The verdict (:mod:`ellrobust.verdict.rules`) and the renderers (:mod:`ellrobust.report`, the terminal's
tables) read the same long table the same way, through this module, which knows nothing of words or
formats:

* :func:`prepare` makes the two spellings of "not applicable" in a text field (``""`` from the engine,
  ``<NA>`` after a CSV round trip) one, and tags the rows with the run they come from;
* intervals, adjusted p-values and power are rows of their own that share the key of the number they
  qualify (:func:`ellrobust.results.row_key`); :class:`Lookup` finds a row's companions, and
  :func:`paired_records` gathers each paired accuracy comparison with all of its companions;
* a row's ``params`` is JSON; :func:`split_params` tells the method's settings from the settings of
  a collapse measurement.

Nothing here computes an interval: a table without those rows shows and judges none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import pandas as pd

from ellrobust.attacks import patch_budgeted
from ellrobust.results import PAIRED_METRICS, Metric
from ellrobust.results import row_key as results_row_key

#: Text columns whose missing values mean "not applicable" and become "".
TEXT_COLUMNS = ("run", "model", "checkpoint", "method", "params", "m_grad", "precision", "baseline", "metric")

#: Keys of a row's params that describe the collapse measurement, not the method that made the images.
COLLAPSE_KEYS = ("feature", "cls", "head", "layers")


def prepare(df: pd.DataFrame, run: str = "") -> pd.DataFrame:
    """A copy of a results table with a ``run`` column and empty text fields as ``""``."""
    out = df.copy()
    out["run"] = run
    for col in TEXT_COLUMNS:
        if col not in out:
            out[col] = ""
        out[col] = out[col].astype("string").fillna("").astype(str)
    return out


def row_key(row: Mapping) -> tuple:
    """A row's run and :func:`ellrobust.results.row_key`: the key its companions (intervals, p) share."""
    return (str(row.get("run", "")), *results_row_key(row))


class Lookup:
    """The value of a row's companion metric (its interval, p-value ...): NaN when the table has none."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._values = {(*row_key(r), r["metric"]): r["value"] for r in df.to_dict(orient="records")}
        self._metrics = set(df["metric"])

    def __call__(self, row: Mapping, metric: str) -> float:
        """``metric`` is a :class:`~ellrobust.results.Metric`, or the name of one this version does not know."""
        return float(self._values.get((*row_key(row), str(metric)), math.nan))

    def has(self, metric: str) -> bool:
        """Whether any row of the table carries ``metric``."""
        return str(metric) in self._metrics


def interval_metrics(metric: str) -> tuple[str, str]:
    """The metrics of a metric's interval rows: :attr:`~ellrobust.results.Metric.ci_low` and ``ci_high``,
    or the same names for a metric this version does not know (a collapse metric of a newer one)."""
    try:
        known = Metric(metric)
    except ValueError:
        return f"{metric}_ci_low", f"{metric}_ci_high"
    return known.ci_low.value, known.ci_high.value


def paired_records(df: pd.DataFrame, lookup: Lookup | None = None) -> list[dict]:
    """Every paired accuracy comparison of a :func:`prepare`-d table, as written (``model`` − ``baseline``).

    One dict per measurement: the ``accuracy_difference`` row's fields, plus one entry per
    :data:`~ellrobust.results.PAIRED_METRICS` member (its value; NaN where the table has none).
    """
    lookup = lookup or Lookup(df)
    rows = df[(df["metric"] == Metric.ACCURACY_DIFFERENCE.value) & df["baseline"].ne("")]
    return [{**r, **{m.value: lookup(r, m) for m in PAIRED_METRICS}} for r in rows.to_dict(orient="records")]


def parse_params(params: object) -> dict:
    """A row's params JSON as a dict; anything that is not a JSON object gives ``{}``."""
    if not isinstance(params, str) or not params:
        return {}
    try:
        obj = json.loads(params)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def patch_rows(df: pd.DataFrame) -> pd.Series:
    """Which rows measure a patch budget (a patch attack, or the worst case over them): their ``eps`` is a
    number of patches, never a pixel budget."""
    flags = [patch_budgeted(m, parse_params(p)) for m, p in zip(df["method"], df["params"], strict=True)]
    return pd.Series(flags, index=df.index, dtype=bool)


def split_params(params: object) -> tuple[dict, dict]:
    """(the method's settings, the collapse settings) of a row's params."""
    obj = parse_params(params)
    collapse = {k: obj[k] for k in COLLAPSE_KEYS if k in obj}
    return {k: v for k, v in obj.items() if k not in COLLAPSE_KEYS}, collapse
