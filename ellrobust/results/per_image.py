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
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ellrobust.core.files import atomic_write
from ellrobust.core.readback import reading
from ellrobust.results.rows import MEASUREMENT_FIELDS

#: The columns of the per-example table, in order.
EXAMPLE_COLUMNS = (
    "model",
    *MEASUREMENT_FIELDS,
    "index",
    "correct",
    "prediction",
    "linf",
    "l2",
    "eps_star",
    "censored",
    "confidence",
    "top5",
)
#: Columns a measurement may leave empty (read back as missing, not as text).
_OPTIONAL_COLUMNS = ("eps", "severity", "prediction", "linf", "l2", "eps_star", "censored", "confidence", "top5")
EXAMPLES_FILE = "examples.csv.gz"


@dataclass(frozen=True)
class Outcomes:
    """One model's per-image outcomes in one measurement, in the order of the run's selection.

    Attributes:
        model: the model.
        method, params, eps, severity, m_grad, precision: the measurement.
        correct: one bool per selected image: classified correctly (clean, corrupted), still
            classified correctly (attacked: robust).
        prediction: the class predicted for each selected image (on the adversarial image under
            attack; on the clean image for an image that was not attacked), or None when unknown.
        linf, l2: under attack, the size of each image's perturbation (0 for an image not
            attacked), or None.
        eps_star, censored: for a minimal-norm method (FMN, ``bisect-<attack>``), each image's
            minimal budget ε* (0 misclassified clean, ``eps_max`` when censored) and whether no
            adversarial example was found within ``eps_max``; None for other measurements.
        confidence, top5: on clean and corrupted images, each image's largest softmax probability
            and whether its label is among the 5 largest logits; None for other measurements.
    """

    model: str
    method: str
    params: str = "{}"
    eps: float | None = None
    severity: int | None = None
    m_grad: str = ""
    precision: str = ""
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), compare=False)
    prediction: np.ndarray | None = field(default=None, compare=False)
    linf: np.ndarray | None = field(default=None, compare=False)
    l2: np.ndarray | None = field(default=None, compare=False)
    eps_star: np.ndarray | None = field(default=None, compare=False)
    censored: np.ndarray | None = field(default=None, compare=False)
    confidence: np.ndarray | None = field(default=None, compare=False)
    top5: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "correct", np.asarray(self.correct, dtype=bool))
        typed = (("prediction", np.int64), ("linf", np.float64), ("l2", np.float64))
        extra = (("eps_star", np.float64), ("censored", bool), ("confidence", np.float64), ("top5", bool))
        for name, dtype in (*typed, *extra):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=dtype)
                if value.shape != self.correct.shape:
                    raise ValueError(f"{name} has {value.size} values for {self.correct.size} images")
                object.__setattr__(self, name, value)

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
                "prediction": pd.array(o.prediction if o.prediction is not None else [None] * len(o.correct), "Int64"),
                "linf": o.linf if o.linf is not None else np.nan,
                "l2": o.l2 if o.l2 is not None else np.nan,
                "eps_star": o.eps_star if o.eps_star is not None else np.nan,
                "censored": pd.array(
                    o.censored.astype(np.int8) if o.censored is not None else [None] * len(o.correct), "Int64"
                ),
                "confidence": o.confidence if o.confidence is not None else np.nan,
                "top5": pd.array(o.top5.astype(np.int8) if o.top5 is not None else [None] * len(o.correct), "Int64"),
            }
        )
        for o in outcomes
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(EXAMPLE_COLUMNS))


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
        df = pd.read_csv(path, keep_default_na=False, na_values={name: [""] for name in _OPTIONAL_COLUMNS})
        for name in ("prediction", "censored", "top5"):
            if name in df:
                df[name] = df[name].astype("Int64")
    return df
