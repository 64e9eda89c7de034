"""One measured number: the typed row, the fields that identify it, and the metric vocabulary.

The results table is long: one :class:`Row` per number. A row says *what* was measured (its
:data:`KEY_FIELDS`: model, the other model of a paired row, method, params, budget or severity,
layer, ``m_grad`` mode, precision) and the :class:`Metric` and value. The engine adds the run's
provenance (:class:`Provenance`: checkpoint digest, dataset, split, n, seed, versions) when it
assembles the table, so stages never repeat it. Every module that builds or reads rows does it
through this one definition; per-image outcomes live in their own table
(:mod:`ellrobust.results.per_image`), never inside a row.

Metric names are a contract with users' scripts (README, "Results"): the values of :class:`Metric`
never change. Accuracies and rates are fractions in [0, 1]; floats stay floats until rendering.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from ellrobust.results.metrics import Direction, Kind, Metric, declare_metric

_FRACTION, _SKIP, _BIN, _SCALED = "fraction", Kind.SKIP, Kind.BINOMIAL, Kind.SCALED
_HIGHER, _LOWER = Direction.HIGHER_IS_BETTER, Direction.LOWER_IS_BETTER

# Accuracies: fractions of the run's images with 95 % Wilson score intervals; their paired rows are
# the accuracy comparison's below, shared by every accuracy.
Metric.CLEAN_ACCURACY = declare_metric(
    "clean_accuracy", unit=_FRACTION, compare=_BIN, better=_HIGHER, interval="Wilson"
)
Metric.ROBUST_ACCURACY = declare_metric(
    "robust_accuracy", unit=_FRACTION, compare=_BIN, better=_HIGHER, interval="Wilson"
)
Metric.CORRUPTION_ACCURACY = declare_metric(
    "corruption_accuracy", unit=_FRACTION, compare=_BIN, better=_HIGHER, interval="Wilson"
)
Metric.N_ATTACKED = declare_metric("n_attacked", unit="count", compare=_SKIP)
Metric.TRANSFER_ACCURACY = declare_metric(
    "transfer_accuracy", unit=_FRACTION, interval="Wilson", doc="a model on another model's adversarial images"
)
# Corruptions (Hendrycks & Dietterich 2019).
Metric.CORRUPTION_ERROR = declare_metric("corruption_error", unit=_FRACTION, compare=_BIN, better=_LOWER)
Metric.CE = declare_metric("ce", unit="ratio", better=_LOWER)
Metric.MCE = declare_metric("mce", unit="ratio", better=_LOWER, paired="paired bootstrap over images")
Metric.RELATIVE_MCE = declare_metric("relative_mce", unit="ratio", better=_LOWER)
# Representation collapse per layer: t intervals over images, paired t differences.
_PER_LAYER = {"interval": "t over images", "paired": "paired t over images"}
Metric.TOKEN_COSINE = declare_metric("token_cosine", unit="cosine", better=_LOWER, **_PER_LAYER)
Metric.ATTENTION_ENTROPY = declare_metric("attention_entropy", unit="nats", better=_HIGHER, **_PER_LAYER)
Metric.EFFECTIVE_RANK = declare_metric("effective_rank", unit="rank", better=_HIGHER, **_PER_LAYER)
Metric.ELLIPTICAL_M_MEAN = declare_metric(
    "elliptical_m_mean", unit="m", doc="the elliptical metric m per layer: its mean over coordinates", **_PER_LAYER
)
Metric.ELLIPTICAL_M_SPREAD = declare_metric(
    "elliptical_m_spread", unit="m", doc="... and its standard deviation over coordinates", **_PER_LAYER
)
# The paired accuracy comparison: model − baseline on the same images (Tango's score interval, exact
# McNemar, Holm over every paired comparison of one pair of models in a run, power at α/m).
Metric.ACCURACY_DIFFERENCE = declare_metric("accuracy_difference", unit=_FRACTION, compare=_SKIP)
Metric.DIFFERENCE_CI_LOW = declare_metric("difference_ci_low", unit=_FRACTION, compare=_SKIP)
Metric.DIFFERENCE_CI_HIGH = declare_metric("difference_ci_high", unit=_FRACTION, compare=_SKIP)
Metric.MCNEMAR_P = declare_metric("mcnemar_p", unit="p", compare=_SKIP)
Metric.MCNEMAR_P_ADJUSTED = declare_metric("mcnemar_p_adjusted", unit="p", compare=_SKIP)
Metric.DETECTABLE_DIFFERENCE = declare_metric("detectable_difference", unit=_FRACTION, compare=_SKIP)
Metric.N_REQUIRED = declare_metric("n_required", unit="count", compare=_SKIP)
Metric.HOLM_FAMILY_SIZE = declare_metric("holm_family_size", unit="count", compare=_SKIP)
# Minimal budgets ε* of minimal-norm methods (censored at eps_max) and their paired comparison.
Metric.EPS_STAR_MEDIAN = declare_metric("eps_star_median", unit="pixels")
Metric.N_CENSORED = declare_metric("n_censored", unit="count", doc="images not broken within eps_max")
# The patch threat model's counterpart of ε* (declared here, not by its measure, because the report reads it).
Metric.MINIMAL_PATCHES_MEDIAN = declare_metric(
    "minimal_patches_median",
    unit="patches",
    better=_HIGHER,
    doc="median over images of the fewest patches any patch attack broke the image with (censored at the largest)",
)
Metric.EPS_STAR_DIFFERENCE = declare_metric(
    "eps_star_difference",
    unit="pixels",
    compare=_SKIP,
    interval="Wilcoxon inverted",
    doc="Hodges–Lehmann ε*(model) − ε*(baseline)",
)
Metric.EPS_STAR_SIGN_P = declare_metric("eps_star_sign_p", unit="p")
Metric.EPS_STAR_SIGN_P_ADJUSTED = declare_metric("eps_star_sign_p_adjusted", unit="p")
Metric.EPS_STAR_WILCOXON_P = declare_metric("eps_star_wilcoxon_p", unit="p")
# Out-of-distribution detection (imagenet-o): OOD positive, score −MSP; DeLong's intervals and test.
Metric.OOD_AUROC = declare_metric("ood_auroc", unit="auroc", interval="DeLong", paired="DeLong paired")
Metric.OOD_AUPR = declare_metric("ood_aupr", unit="average precision")
Metric.OOD_AUROC_DELONG_P = declare_metric("ood_auroc_delong_p", unit="p")
Metric.OOD_AUROC_DELONG_P_ADJUSTED = declare_metric("ood_auroc_delong_p_adjusted", unit="p")
# Each claim's primary endpoint per elliptical × plain pair (method "primary"; params: claim, test, what
# is compared, its unit and direction): elliptical − baseline, its 95 % interval, two-sided p, images.
Metric.PRIMARY_ESTIMATE = declare_metric("primary_estimate", unit="per claim", compare=_SKIP, interval="per test")
Metric.PRIMARY_P = declare_metric("primary_p", unit="p", compare=_SKIP)
Metric.PRIMARY_N = declare_metric("primary_n", unit="count", compare=_SKIP)
# Top-5 accuracy and calibration (clean and corrupted images), outside the verdict's Holm family.
Metric.TOP5_ACCURACY = declare_metric(
    "top5_accuracy", unit=_FRACTION, compare=_BIN, better=_HIGHER, interval="Wilson", paired="Tango score interval"
)
Metric.TOP5_MCNEMAR_P = declare_metric("top5_mcnemar_p", unit="p", compare=_SKIP)
_CALIBRATION = {"interval": "bootstrap over images", "paired": "paired bootstrap over images"}
Metric.CALIBRATION_ERROR = declare_metric(
    "calibration_error", unit=_FRACTION, better=_LOWER, doc="ECE, 15 equal-width bins", **_CALIBRATION
)
Metric.RMS_CALIBRATION_ERROR = declare_metric(
    "rms_calibration_error", unit=_FRACTION, better=_LOWER, doc="the paper's calib_err(p='2')", **_CALIBRATION
)


#: Accuracies: fractions of the run's images, each with a Wilson interval.
ACCURACIES = (
    Metric.CLEAN_ACCURACY,
    Metric.ROBUST_ACCURACY,
    Metric.CORRUPTION_ACCURACY,
    Metric.TRANSFER_ACCURACY,
    Metric.TOP5_ACCURACY,
)
#: Calibration errors of the max-softmax confidence, each with a bootstrap interval and paired differences.
CALIBRATION_METRICS = (Metric.CALIBRATION_ERROR, Metric.RMS_CALIBRATION_ERROR)
#: Metrics measured per layer by ``--collapse``, each with a t interval over images and paired differences.
COLLAPSE_METRICS = (
    Metric.TOKEN_COSINE,
    Metric.ATTENTION_ENTROPY,
    Metric.EFFECTIVE_RANK,
    Metric.ELLIPTICAL_M_MEAN,
    Metric.ELLIPTICAL_M_SPREAD,
)
#: The per-layer metrics only an elliptical layer has (a model with standard attention gets no rows).
ELLIPTICAL_METRICS = (Metric.ELLIPTICAL_M_MEAN, Metric.ELLIPTICAL_M_SPREAD)
#: The rows of one paired accuracy comparison, in the order they are written and shown.
PAIRED_METRICS = (
    Metric.ACCURACY_DIFFERENCE,
    Metric.DIFFERENCE_CI_LOW,
    Metric.DIFFERENCE_CI_HIGH,
    Metric.MCNEMAR_P,
    Metric.MCNEMAR_P_ADJUSTED,
    Metric.DETECTABLE_DIFFERENCE,
    Metric.N_REQUIRED,
    Metric.HOLM_FAMILY_SIZE,
)

#: The rows of one paired comparison of minimal budgets ε*, in the order they are written and shown.
EPS_STAR_PAIRED_METRICS = (
    Metric.EPS_STAR_DIFFERENCE,
    Metric.EPS_STAR_DIFFERENCE.ci_low,
    Metric.EPS_STAR_DIFFERENCE.ci_high,
    Metric.EPS_STAR_SIGN_P,
    Metric.EPS_STAR_SIGN_P_ADJUSTED,
    Metric.EPS_STAR_WILCOXON_P,
)

#: The rows of one paired comparison of OOD detection (AUROC, DeLong), in the order they are written and shown.
OOD_PAIRED_METRICS = (
    Metric.OOD_AUROC.difference,
    Metric.OOD_AUROC.difference.ci_low,
    Metric.OOD_AUROC.difference.ci_high,
    Metric.OOD_AUROC_DELONG_P,
    Metric.OOD_AUROC_DELONG_P_ADJUSTED,
)

#: Metric names users' scripts may rely on (README, "Results"), besides the ``sanity_*`` checks.
METRICS = tuple(m.value for m in Metric)

#: What a model was measured on: the name of a measurement, shared by its per-image outcomes.
MEASUREMENT_FIELDS = ("method", "params", "eps", "severity", "m_grad", "precision")
#: The fields that identify a measured number apart from its metric; a row's companions (intervals,
#: adjusted p) share them.
KEY_FIELDS = ("model", "baseline", "method", "params", "eps", "severity", "layer", "m_grad", "precision")


#: Text fields a row may leave empty, and those the table shows as missing (None) when empty.
_OPTIONAL_TEXT = ("params", "m_grad", "precision", "baseline")
_NONE_WHEN_EMPTY = ("precision", "baseline")


@dataclass(frozen=True)
class Row:
    """One measured number and what it measures.

    Attributes:
        model: the model measured (in a paired row, model A of A − B).
        metric: what the number is.
        value: the number (NaN where a statistic is undefined, e.g. the images needed for a zero difference).
        method: ``clean``, an attack, a corruption, ``worst-case``, ``collapse``, ``mce``, ``ood``, ``sanity``.
        params: the method's parameters as JSON (a sanity row: its detail).
        eps: the attack budget in [0, 1] pixel units.
        severity: the corruption severity (None: averaged over severities).
        layer: the block of a per-layer metric (None: not per layer, or the later-half summary).
        m_grad: ``detach`` or ``full`` for an elliptical model under attack, else empty.
        precision: the attack iterations' precision, empty where it does not apply.
        baseline: model B of a paired row (and the reference of baseline-normalised CE), else empty.
    """

    model: str
    metric: Metric
    value: float
    method: str
    params: str = "{}"
    eps: float | None = None
    severity: int | None = None
    layer: int | None = None
    m_grad: str = ""
    precision: str = ""
    baseline: str = ""

    def __post_init__(self) -> None:
        for name in _OPTIONAL_TEXT:
            if getattr(self, name) is None:
                object.__setattr__(self, name, "")
        object.__setattr__(self, "metric", Metric(self.metric))
        object.__setattr__(self, "value", float(self.value))
        for name in ("severity", "layer"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))
        if self.eps is not None:
            object.__setattr__(self, "eps", float(self.eps))

    def with_metric(self, metric: Metric, value: float) -> Row:
        """A companion of this row: the same measurement, another metric (an interval end, an adjusted p)."""
        return replace(self, metric=metric, value=value)

    def replace(self, **changes: object) -> Row:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, object]:
        """The row as a flat record, as the table and ``--json`` show it: ``precision`` and ``baseline``
        are None where they do not apply, ``m_grad`` is ``""`` (what users' scripts have always read)."""
        out = asdict(self)
        out["metric"] = self.metric.value
        for name in _NONE_WHEN_EMPTY:
            out[name] = out[name] or None
        return out


@dataclass(frozen=True)
class Provenance:
    """What the engine adds to every row of a run: which weights, data, images and software produced it."""

    checkpoint: str | None
    dataset: str
    split: str | None
    n: int
    seed: int
    ellrobust_version: str
    torch_version: str


#: Column → dtype of the results table, in the order of its columns (the CSV's header).
COLUMNS: dict[str, str] = {
    "model": "string",
    "checkpoint": "string",
    "dataset": "string",
    "split": "string",
    "n": "Int64",
    "method": "string",
    "params": "string",
    "eps": "float64",
    "severity": "Int64",
    "layer": "Int64",
    "m_grad": "string",
    "precision": "string",
    "baseline": "string",
    "metric": "string",
    "value": "float64",
    "seed": "Int64",
    "ellrobust_version": "string",
    "torch_version": "string",
}


def _missing(value: object) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    try:
        return bool(value != value)  # pandas' NA and NaT
    except (TypeError, ValueError):
        return True


def _key_value(name: str, value: object) -> object:
    """A key field as a hashable, comparable value: missing text → ``""``, missing numbers → None,
    integers (severity, layer) as int, budgets as floats rounded to 12 decimals."""
    dtype = COLUMNS[name]
    if dtype == "string":
        return "" if _missing(value) else str(value)
    if _missing(value):
        return None
    return int(value) if dtype == "Int64" else round(float(value), 12)


def _canonical_params(metric: object, params: object) -> str:
    """Params as part of a key: JSON with sorted keys; empty for sanity rows, whose params hold free text."""
    if str(metric).startswith("sanity_"):
        return ""
    text = "" if params is None or not isinstance(params, str) else params
    try:
        return json.dumps(json.loads(text), sort_keys=True) if text else ""
    except ValueError:
        return text


def row_key(record: Mapping[str, object], *, with_metric: bool = False) -> tuple:
    """The identity of a row given as a mapping (a table record, a baseline entry), normalised for lookups.

    Missing text fields and empty strings are the same (``""``), missing numbers are None, numbers
    are floats, budgets are rounded to 12 decimals (a CSV round trip moves their last digit), and
    params are canonical JSON, so a row and its companions match wherever they were read from.
    """
    values = [
        _canonical_params(record.get("metric"), record.get(name))
        if name == "params"
        else _key_value(name, record.get(name))
        for name in KEY_FIELDS
    ]
    if with_metric:
        values.append(str(record.get("metric", "")))
    return tuple(values)
