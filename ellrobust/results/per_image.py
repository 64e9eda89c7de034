"""Per-image outcomes: one 0/1 per selected image, per model and measurement, in a table of their own.

A measurement (:data:`~ellrobust.results.rows.MEASUREMENT_FIELDS`: method, params, budget or
severity, ``m_grad``, precision) decides for each of the run's images whether a model got it right
(clean, corrupted) or kept it right (under attack). Those bits are what paired statistics, worst
cases and CI reports are computed from; they never travel inside a results row. Beside the bit, each
image keeps what the model said (``prediction``: the class it predicted on the clean, corrupted or
adversarial image) and, under attack, how large the perturbation was (``linf`` and ``l2``, in [0, 1]
pixel units, whatever the attack's norm); a minimal-norm method adds each image's minimal budget
(``eps_star``) and whether it is ``censored``. A clean or corrupted image keeps the model's max-softmax
``confidence`` and whether the label is among its 5 largest logits (``top5``), from which calibration
and top-5 accuracy are derived (:mod:`ellrobust.stats.calibration`). On disk they are the run
folder's ``examples.csv.gz``: one line per (model, measurement, image), with the image's index in
the evaluated split; a column a measurement does not record (the norms of a clean image) is empty.

The columns of that file are declared below, in the file's order, with
:func:`~ellrobust.results.image_table.declare_column`; a column a measure declares ``example=True``
in its own module follows them.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ellrobust.core.files import atomic_write
from ellrobust.core.readback import reading
from ellrobust.results.image_table import Column, column, declare_column, declared_columns, family_values
from ellrobust.results.rows import MEASUREMENT_FIELDS

#: The outcome every per-example line has: the verdict on the image.
CORRECT = "correct"

declare_column(
    CORRECT, bool, "1: classified correctly (clean, corrupted) or still correctly (attacked: robust)", example=True
)
declare_column("prediction", np.int64, "the class predicted on the image the verdict was taken on", example=True)
declare_column("linf", np.float64, "the perturbation's L∞ size in [0, 1] pixel units (0: not attacked)", example=True)
declare_column("l2", np.float64, "the perturbation's L2 size in [0, 1] pixel units (0: not attacked)", example=True)
declare_column("eps_star", np.float64, "the minimal budget ε* that breaks the image (0: wrong clean)", example=True)
declare_column("censored", bool, "1: no adversarial image within eps_max (ε* is a lower bound)", example=True)
declare_column("confidence", np.float64, "the largest softmax probability on the image", example=True)
declare_column("top5", bool, "1: the label is among the 5 largest logits", example=True)

EXAMPLES_FILE = "examples.csv.gz"


def example_columns() -> tuple[str, ...]:
    """The columns of the per-example table, in order: the declared ``example`` columns come last."""
    return ("model", *MEASUREMENT_FIELDS, "index", *(c.name for c in declared_columns() if c.example))


@dataclass(frozen=True, kw_only=True)
class Outcomes:
    """One model's per-image outcomes in one measurement, in the order of the run's selection.

    Built by keyword from a unit's :class:`~ellrobust.results.image_table.ImageTable` entry
    (:meth:`ellrobust.run.units.UnitResult.outcomes_of`).

    Attributes:
        model: the model.
        method, params, eps, severity, m_grad, precision: the measurement.
        columns: declared per-image columns (:func:`~ellrobust.results.image_table.declare_column`),
            one value per selected image each; :data:`CORRECT` is always there. Under attack,
            ``prediction`` is the class predicted on the adversarial image (the clean one for an
            image not attacked) and ``linf``/``l2`` are 0 for an image not attacked.
    """

    model: str
    method: str
    params: str = "{}"
    eps: float | None = None
    severity: int | None = None
    m_grad: str = ""
    precision: str = ""
    columns: Mapping[str, Iterable] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if CORRECT not in self.columns:
            raise ValueError(f"outcomes of {self.model} {self.method} have no {CORRECT!r} column")
        size = len(np.asarray(self.columns[CORRECT]))
        typed = {}
        for name, values in self.columns.items():
            typed[name] = np.asarray(values, dtype=column(name).dtype)
            if typed[name].shape != (size,):
                raise ValueError(f"{name} has {typed[name].size} values for {size} images")
        object.__setattr__(self, "columns", typed)

    @property
    def correct(self) -> np.ndarray:
        """One bool per selected image: classified correctly (clean, corrupted), still so (attacked: robust)."""
        return self.columns[CORRECT]

    def get(self, name: str) -> np.ndarray | None:
        """A per-image column, or None when this measurement does not record it."""
        return self.columns.get(name)

    @property
    def measurement(self) -> tuple:
        """The measurement's fields, in :data:`MEASUREMENT_FIELDS` order: what pairs two models' outcomes."""
        return tuple(getattr(self, name) for name in MEASUREMENT_FIELDS)


def _example_values(o: Outcomes, declared: Column) -> object:
    """One outcome's values of an optional example column: 0/1 and class columns as nullable integers
    (empty where the measurement lacks them), float columns as floats (NaN: empty), and a family as
    text: its members' values joined by spaces, in member order (``"12 13"``; −1 padding left out)."""
    if declared.family:
        return _family_text(o, declared.name)
    values = o.get(declared.name)
    if declared.dtype.kind == "f":
        return values if values is not None else np.nan
    if values is None:
        return pd.array([None] * len(o.correct), "Int64")
    return pd.array(values.astype(np.int8) if declared.dtype == bool else values, "Int64")


def _family_text(o: Outcomes, family: str) -> list[str]:
    table = family_values(o.columns, family)
    if table is None:
        return [""] * len(o.correct)
    return [" ".join(str(v) for v in row if v >= 0) for row in table]


def examples_frame(outcomes: Iterable[Outcomes], indices: Sequence[int]) -> pd.DataFrame:
    """The per-example table: one row per outcome and image (``index``: the image's index in the split)."""
    optional = [c for c in declared_columns() if c.example and c.name != CORRECT]
    frames = [
        pd.DataFrame(
            {
                "model": o.model,
                **{name: value for name, value in zip(MEASUREMENT_FIELDS, o.measurement, strict=True)},
                "index": list(indices),
                CORRECT: o.correct.astype(np.int8),
                **{c.name: _example_values(o, c) for c in optional},
            }
        )
        for o in outcomes
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(example_columns()))


def save_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as gzipped CSV atomically, byte-identical for identical tables (no gzip timestamp)."""
    atomic_write(Path(path), gzip.compress(frame.to_csv(index=False, lineterminator="\n").encode(), mtime=0))


def save_examples(examples: pd.DataFrame, run_dir: Path) -> None:
    """Write ``examples.csv.gz`` (:func:`save_csv_gz`)."""
    save_csv_gz(examples, Path(run_dir) / EXAMPLES_FILE)


def load_examples(run_dir: Path) -> pd.DataFrame | None:
    """A run folder's per-example table, or None when the folder has none."""
    path = Path(run_dir) / EXAMPLES_FILE
    if not path.is_file():
        return None
    with reading(path, "per-example table"):
        optional = [c for c in declared_columns() if c.example and c.name != CORRECT]
        empty = {name: [""] for name in ("eps", "severity", *(c.name for c in optional if not c.family))}
        text = {c.name: str for c in optional if c.family}  # a family's members, joined: "" where none
        df = pd.read_csv(path, keep_default_na=False, na_values=empty, dtype=text)
        for c in optional:
            if c.name in df and not c.family and c.dtype.kind != "f":
                df[c.name] = df[c.name].astype("Int64")
    return df
