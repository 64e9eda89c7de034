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
from enum import StrEnum


class Metric(StrEnum):
    """Every metric name a results table holds (the public contract)."""

    CLEAN_ACCURACY = "clean_accuracy"
    ROBUST_ACCURACY = "robust_accuracy"
    CORRUPTION_ACCURACY = "corruption_accuracy"
    CLEAN_ACCURACY_CI_LOW = "clean_accuracy_ci_low"  # 95 % Wilson score intervals
    CLEAN_ACCURACY_CI_HIGH = "clean_accuracy_ci_high"
    ROBUST_ACCURACY_CI_LOW = "robust_accuracy_ci_low"
    ROBUST_ACCURACY_CI_HIGH = "robust_accuracy_ci_high"
    CORRUPTION_ACCURACY_CI_LOW = "corruption_accuracy_ci_low"
    CORRUPTION_ACCURACY_CI_HIGH = "corruption_accuracy_ci_high"
    N_ATTACKED = "n_attacked"
    TRANSFER_ACCURACY = "transfer_accuracy"  # a model on another model's adversarial images (params: source)
    TRANSFER_ACCURACY_CI_LOW = "transfer_accuracy_ci_low"
    TRANSFER_ACCURACY_CI_HIGH = "transfer_accuracy_ci_high"
    CORRUPTION_ERROR = "corruption_error"
    CE = "ce"
    MCE = "mce"
    RELATIVE_MCE = "relative_mce"
    MCE_DIFFERENCE = "mce_difference"  # with a paired bootstrap interval over images
    MCE_DIFFERENCE_CI_LOW = "mce_difference_ci_low"
    MCE_DIFFERENCE_CI_HIGH = "mce_difference_ci_high"
    TOKEN_COSINE = "token_cosine"
    TOKEN_COSINE_CI_LOW = "token_cosine_ci_low"
    TOKEN_COSINE_CI_HIGH = "token_cosine_ci_high"
    TOKEN_COSINE_DIFFERENCE = "token_cosine_difference"
    TOKEN_COSINE_DIFFERENCE_CI_LOW = "token_cosine_difference_ci_low"
    TOKEN_COSINE_DIFFERENCE_CI_HIGH = "token_cosine_difference_ci_high"
    ATTENTION_ENTROPY = "attention_entropy"
    ATTENTION_ENTROPY_CI_LOW = "attention_entropy_ci_low"
    ATTENTION_ENTROPY_CI_HIGH = "attention_entropy_ci_high"
    ATTENTION_ENTROPY_DIFFERENCE = "attention_entropy_difference"
    ATTENTION_ENTROPY_DIFFERENCE_CI_LOW = "attention_entropy_difference_ci_low"
    ATTENTION_ENTROPY_DIFFERENCE_CI_HIGH = "attention_entropy_difference_ci_high"
    EFFECTIVE_RANK = "effective_rank"
    EFFECTIVE_RANK_CI_LOW = "effective_rank_ci_low"
    EFFECTIVE_RANK_CI_HIGH = "effective_rank_ci_high"
    EFFECTIVE_RANK_DIFFERENCE = "effective_rank_difference"
    EFFECTIVE_RANK_DIFFERENCE_CI_LOW = "effective_rank_difference_ci_low"
    EFFECTIVE_RANK_DIFFERENCE_CI_HIGH = "effective_rank_difference_ci_high"
    ELLIPTICAL_M_MEAN = "elliptical_m_mean"  # the elliptical metric m per layer: its mean over coordinates
    ELLIPTICAL_M_MEAN_CI_LOW = "elliptical_m_mean_ci_low"
    ELLIPTICAL_M_MEAN_CI_HIGH = "elliptical_m_mean_ci_high"
    ELLIPTICAL_M_MEAN_DIFFERENCE = "elliptical_m_mean_difference"
    ELLIPTICAL_M_MEAN_DIFFERENCE_CI_LOW = "elliptical_m_mean_difference_ci_low"
    ELLIPTICAL_M_MEAN_DIFFERENCE_CI_HIGH = "elliptical_m_mean_difference_ci_high"
    ELLIPTICAL_M_SPREAD = "elliptical_m_spread"  # ... and its standard deviation over coordinates
    ELLIPTICAL_M_SPREAD_CI_LOW = "elliptical_m_spread_ci_low"
    ELLIPTICAL_M_SPREAD_CI_HIGH = "elliptical_m_spread_ci_high"
    ELLIPTICAL_M_SPREAD_DIFFERENCE = "elliptical_m_spread_difference"
    ELLIPTICAL_M_SPREAD_DIFFERENCE_CI_LOW = "elliptical_m_spread_difference_ci_low"
    ELLIPTICAL_M_SPREAD_DIFFERENCE_CI_HIGH = "elliptical_m_spread_difference_ci_high"
    ACCURACY_DIFFERENCE = "accuracy_difference"  # paired: model − baseline, same images
    DIFFERENCE_CI_LOW = "difference_ci_low"  # score interval for paired proportions (Tango)
    DIFFERENCE_CI_HIGH = "difference_ci_high"
    MCNEMAR_P = "mcnemar_p"
    MCNEMAR_P_ADJUSTED = "mcnemar_p_adjusted"  # Holm over every paired comparison of one pair of models in a run
    DETECTABLE_DIFFERENCE = "detectable_difference"
    N_REQUIRED = "n_required"
    HOLM_FAMILY_SIZE = "holm_family_size"  # m of the pair's Holm family: power rows are stated at α/m
    EPS_STAR_MEDIAN = "eps_star_median"  # minimal-norm methods: the median ε* (censored at eps_max)
    N_CENSORED = "n_censored"  # images not broken within eps_max
    EPS_STAR_DIFFERENCE = "eps_star_difference"  # paired: Hodges–Lehmann estimate of ε*(model) − ε*(baseline)
    EPS_STAR_DIFFERENCE_CI_LOW = "eps_star_difference_ci_low"  # its distribution-free interval
    EPS_STAR_DIFFERENCE_CI_HIGH = "eps_star_difference_ci_high"
    EPS_STAR_SIGN_P = "eps_star_sign_p"  # the paired sign test on ε*
    EPS_STAR_SIGN_P_ADJUSTED = "eps_star_sign_p_adjusted"  # Holm, in the same family as mcnemar_p_adjusted
    EPS_STAR_WILCOXON_P = "eps_star_wilcoxon_p"  # the signed-rank test on ε*, secondary
    OOD_AUROC = "ood_auroc"  # out-of-distribution detection (imagenet-o): OOD positive, score −MSP
    OOD_AUROC_CI_LOW = "ood_auroc_ci_low"  # DeLong's 95 % interval
    OOD_AUROC_CI_HIGH = "ood_auroc_ci_high"
    OOD_AUPR = "ood_aupr"  # average precision, OOD positive
    OOD_AUROC_DIFFERENCE = "ood_auroc_difference"  # paired: AUROC(model) − AUROC(baseline), same images
    OOD_AUROC_DIFFERENCE_CI_LOW = "ood_auroc_difference_ci_low"  # DeLong's paired interval
    OOD_AUROC_DIFFERENCE_CI_HIGH = "ood_auroc_difference_ci_high"
    OOD_AUROC_DELONG_P = "ood_auroc_delong_p"  # DeLong's paired z-test
    OOD_AUROC_DELONG_P_ADJUSTED = "ood_auroc_delong_p_adjusted"  # Holm, in the same family as mcnemar_p_adjusted
    # Top-5 accuracy and calibration (clean and corrupted images; README "Statistics"): reported with
    # their intervals and paired differences, outside the Holm family of the verdict.
    TOP5_ACCURACY = "top5_accuracy"  # the label among the 5 largest logits (every image, below 5 classes)
    TOP5_ACCURACY_CI_LOW = "top5_accuracy_ci_low"
    TOP5_ACCURACY_CI_HIGH = "top5_accuracy_ci_high"
    TOP5_ACCURACY_DIFFERENCE = "top5_accuracy_difference"  # paired: Tango interval, exact McNemar p
    TOP5_ACCURACY_DIFFERENCE_CI_LOW = "top5_accuracy_difference_ci_low"
    TOP5_ACCURACY_DIFFERENCE_CI_HIGH = "top5_accuracy_difference_ci_high"
    TOP5_MCNEMAR_P = "top5_mcnemar_p"
    CALIBRATION_ERROR = "calibration_error"  # ECE, 15 equal-width bins, with a bootstrap interval over images
    CALIBRATION_ERROR_CI_LOW = "calibration_error_ci_low"
    CALIBRATION_ERROR_CI_HIGH = "calibration_error_ci_high"
    CALIBRATION_ERROR_DIFFERENCE = "calibration_error_difference"  # paired bootstrap over the same images
    CALIBRATION_ERROR_DIFFERENCE_CI_LOW = "calibration_error_difference_ci_low"
    CALIBRATION_ERROR_DIFFERENCE_CI_HIGH = "calibration_error_difference_ci_high"
    RMS_CALIBRATION_ERROR = "rms_calibration_error"  # the paper's calib_err(p='2'), adaptive bins of 100
    RMS_CALIBRATION_ERROR_CI_LOW = "rms_calibration_error_ci_low"
    RMS_CALIBRATION_ERROR_CI_HIGH = "rms_calibration_error_ci_high"
    RMS_CALIBRATION_ERROR_DIFFERENCE = "rms_calibration_error_difference"
    RMS_CALIBRATION_ERROR_DIFFERENCE_CI_LOW = "rms_calibration_error_difference_ci_low"
    RMS_CALIBRATION_ERROR_DIFFERENCE_CI_HIGH = "rms_calibration_error_difference_ci_high"
    SANITY_FINITE_LOGITS = "sanity_finite_logits"  # sanity checks: 1 pass, 0 fail, the detail in params
    SANITY_PERTURBATION_WITHIN_EPS = "sanity_perturbation_within_eps"
    SANITY_INSIDE_UNIT_RANGE = "sanity_inside_unit_range"
    SANITY_ROBUST_LE_CLEAN = "sanity_robust_le_clean"
    SANITY_MONOTONE_IN_EPS = "sanity_monotone_in_eps"
    SANITY_PGD_LE_FGSM = "sanity_pgd_le_fgsm"
    SANITY_NO_GRADIENT_MASKING = "sanity_no_gradient_masking"
    SANITY_LARGE_EPS_REACHES_CHANCE = "sanity_large_eps_reaches_chance"
    SANITY_PRECISION_NOT_ABOVE_FP32 = "sanity_precision_not_above_fp32"
    SANITY_TRANSFER_NOT_STRONGER = "sanity_transfer_not_stronger"
    SANITY_MINIMAL_NORM_NOT_BEATEN = "sanity_minimal_norm_not_beaten"
    SANITY_DETERMINISTIC_OUTPUTS = "sanity_deterministic_outputs"  # attack-failure checks (failure probe)
    SANITY_LOGITS_NOT_PROBABILITIES = "sanity_logits_not_probabilities"
    SANITY_NONZERO_GRADIENTS = "sanity_nonzero_gradients"
    SANITY_LOSS_MOVES = "sanity_loss_moves"

    @property
    def ci_low(self) -> Metric:
        """The lower end of this metric's 95 % interval (``robust_accuracy`` → ``robust_accuracy_ci_low``)."""
        return Metric(f"{self.value}_ci_low")

    @property
    def ci_high(self) -> Metric:
        return Metric(f"{self.value}_ci_high")

    @property
    def difference(self) -> Metric:
        """The paired difference of this metric between two models (``token_cosine`` → ``token_cosine_difference``)."""
        return Metric(f"{self.value}_difference")

    @property
    def is_sanity(self) -> bool:
        return self.value.startswith("sanity_")

    @classmethod
    def sanity(cls, check: str) -> Metric:
        """The metric of a named sanity check (``robust_le_clean`` → ``sanity_robust_le_clean``)."""
        return cls(f"sanity_{check}")


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
    Metric.EPS_STAR_DIFFERENCE_CI_LOW,
    Metric.EPS_STAR_DIFFERENCE_CI_HIGH,
    Metric.EPS_STAR_SIGN_P,
    Metric.EPS_STAR_SIGN_P_ADJUSTED,
    Metric.EPS_STAR_WILCOXON_P,
)

#: The rows of one paired comparison of OOD detection (AUROC, DeLong), in the order they are written and shown.
OOD_PAIRED_METRICS = (
    Metric.OOD_AUROC_DIFFERENCE,
    Metric.OOD_AUROC_DIFFERENCE_CI_LOW,
    Metric.OOD_AUROC_DIFFERENCE_CI_HIGH,
    Metric.OOD_AUROC_DELONG_P,
    Metric.OOD_AUROC_DELONG_P_ADJUSTED,
)

#: Metric names users' scripts may rely on (README, "Results"), besides the ``sanity_*`` checks.
METRICS = tuple(m.value for m in Metric if not m.is_sanity)

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
