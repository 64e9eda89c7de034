"""Older results in the current shape: the one place that knows what earlier versions wrote.

* ellrobust 0.1 (schema 1) wrote no ``precision``: every attack, sanity check and collapse
  measurement of that version ran in fp32, so those rows get ``fp32`` (clean and corruption rows
  have no precision in any version).
* Tables up to schema 2 may lack the rows that 0.2 added on the way: the 95 % Wilson interval of
  every accuracy and the Holm-adjusted p of every paired comparison. Both follow from the table
  itself (an accuracy and its ``n``; every ``mcnemar_p`` of one pair of models in the run, Holm's
  family), and are computed exactly as the engine computes them. What needs the per-image outcomes
  (a paired interval that a table never had, the detectable difference) is not invented.

Run tables (:func:`~ellrobust.results.storage.load_results`) and CI baselines
(:func:`~ellrobust.verdict.regression.read_baseline`) both pass through here, so no other module asks which
version wrote a file.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ellrobust.results.rows import ACCURACIES, Metric, row_key
from ellrobust.stats.inference import holm_adjust, wilson_interval

_NOT_MEASURED_IN_PRECISION = {Metric.SANITY_FINITE_LOGITS.value}


def _ran_in_fp32(record: dict) -> bool:
    """Whether a 0.1 row describes a measurement 0.2 would tag with its precision (fp32 for 0.1)."""
    metric = str(record.get("metric", ""))
    if metric.startswith("sanity_"):
        return metric not in _NOT_MEASURED_IN_PRECISION
    has_eps = record.get("eps") is not None and not (isinstance(record["eps"], float) and np.isnan(record["eps"]))
    return has_eps or record.get("method") == "collapse"


def migrate_records(records: Iterable[dict]) -> list[dict]:
    """Flat records (a results table's or a baseline's) with the fields every version since has written."""
    out = []
    for record in records:
        record = dict(record)
        if "precision" not in record:
            record["precision"] = "fp32" if _ran_in_fp32(record) else None
        out.append(record)
    return out


def complete_table(df: pd.DataFrame) -> pd.DataFrame:
    """A typed results table with every companion row that follows from the table itself.

    Adds the Wilson interval rows of accuracy rows that lack them and the Holm-adjusted p of paired
    comparisons that lack it; a table that has them all comes back unchanged.
    """
    added = _wilson_rows(df) + _holm_rows(df)
    if not added:
        return df
    return pd.concat([df, pd.DataFrame(added).astype({c: df[c].dtype for c in df.columns})], ignore_index=True)


def _present(df: pd.DataFrame) -> set[tuple]:
    return {row_key(r, with_metric=True) for r in df.to_dict(orient="records")}


def _wilson_rows(df: pd.DataFrame) -> list[dict]:
    present = _present(df)
    out = []
    accuracies = {m.value for m in ACCURACIES}
    for r in df.to_dict(orient="records"):
        if r["metric"] not in accuracies or not _blank(r.get("baseline")) or pd.isna(r["value"]) or pd.isna(r["n"]):
            continue
        metric = Metric(r["metric"])
        if (*row_key(r), metric.ci_low.value) in present:
            continue
        low, high = wilson_interval(float(r["value"]) * int(r["n"]), int(r["n"]))
        out += [
            {**r, "metric": metric.ci_low.value, "value": low},
            {**r, "metric": metric.ci_high.value, "value": high},
        ]
    return out


def _holm_rows(df: pd.DataFrame) -> list[dict]:
    paired = df[df["metric"] == Metric.MCNEMAR_P.value]
    if paired.empty or (df["metric"] == Metric.MCNEMAR_P_ADJUSTED.value).any():
        return []
    out = []
    for _, family in paired.groupby(["model", "baseline"], sort=False, dropna=False):
        adjusted = holm_adjust(family["value"].astype(float).tolist())
        for r, p in zip(family.to_dict(orient="records"), adjusted, strict=True):
            out.append({**r, "metric": Metric.MCNEMAR_P_ADJUSTED.value, "value": float(p)})
    return out


def _blank(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) or value == ""
