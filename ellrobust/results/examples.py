"""Per-image outcomes: one 0/1 per selected image, per model and measurement, in a table of their own.

A measurement (:data:`~ellrobust.results.rows.MEASUREMENT_FIELDS`: method, params, budget or
severity, ``m_grad``, precision) decides for each of the run's images whether a model got it right
(clean, corrupted) or kept it right (under attack). Those bits are what paired statistics, worst
cases and CI reports are computed from; they never travel inside a results row. On disk they are the
run folder's ``examples.csv.gz``: one line per (model, measurement, image), with the image's index
in the evaluated split.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ellrobust.files import atomic_write
from ellrobust.results.rows import MEASUREMENT_FIELDS

#: The columns of the per-example table, in order.
EXAMPLE_COLUMNS = ("model", *MEASUREMENT_FIELDS, "index", "correct")
EXAMPLES_FILE = "examples.csv.gz"


@dataclass(frozen=True)
class Outcomes:
    """One model's per-image outcomes in one measurement, in the order of the run's selection.

    Attributes:
        model: the model.
        method, params, eps, severity, m_grad, precision: the measurement.
        correct: one bool per selected image: classified correctly (clean, corrupted), still
            classified correctly (attacked: robust).
    """

    model: str
    method: str
    params: str = "{}"
    eps: float | None = None
    severity: int | None = None
    m_grad: str = ""
    precision: str = ""
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "correct", np.asarray(self.correct, dtype=bool))

    @property
    def measurement(self) -> tuple:
        """The measurement's fields, in :data:`MEASUREMENT_FIELDS` order: what pairs two models' outcomes."""
        return tuple(getattr(self, name) for name in MEASUREMENT_FIELDS)


def examples_frame(outcomes: Iterable[Outcomes], indices: Sequence[int]) -> pd.DataFrame:
    """The per-example table: one row per outcome and image (``index``: the image's index in the split)."""
    frames = [
        pd.DataFrame(
            {
                "model": o.model,
                **{name: value for name, value in zip(MEASUREMENT_FIELDS, o.measurement, strict=True)},
                "index": list(indices),
                "correct": o.correct.astype(np.int8),
            }
        )
        for o in outcomes
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(EXAMPLE_COLUMNS))


def save_examples(examples: pd.DataFrame, run_dir: Path) -> None:
    """Write ``examples.csv.gz`` atomically, byte-identical for identical tables (no timestamp in the gzip header)."""
    text = examples.to_csv(index=False, lineterminator="\n").encode()
    atomic_write(Path(run_dir) / EXAMPLES_FILE, gzip.compress(text, mtime=0))


def load_examples(run_dir: Path) -> pd.DataFrame | None:
    """A run folder's per-example table, or None when the folder has none."""
    path = Path(run_dir) / EXAMPLES_FILE
    if not path.is_file():
        return None
    return pd.read_csv(path, keep_default_na=False, na_values={"eps": [""], "severity": [""]})
