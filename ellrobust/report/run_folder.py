"""One run folder as the report sees it: its label, path, run.json and results table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Run:
    """One run folder as the report sees it.

    Attributes:
        label: Short name used in tables and legends when several runs are combined.
        path: The folder.
        meta: Its ``run.json`` (empty when the folder has none).
        table: Its results, :func:`~ellrobust.verdict.results_view.prepare`-d with ``run == label``.
    """

    label: str
    path: Path
    meta: Mapping
    table: pd.DataFrame
