"""Corruption error (CE), mean corruption error (mCE) and relative mCE (Hendrycks & Dietterich 2019).

With ``E[c][s]`` a model's top-1 error on corruption c at severity s and ``E_clean`` its clean error:

    CE_c          = Σ_s E[c][s] / Σ_s E_ref[c][s]
    relative CE_c = Σ_s (E[c][s] − E_clean) / Σ_s (E_ref[c][s] − E_ref_clean)
    mCE           = mean over corruptions of CE_c        (likewise relative mCE)

The reference on ImageNet is AlexNet (constants below). Other datasets have no AlexNet numbers; there
the reference is either a named baseline model of the same run, or none (``reference=None``): the
*unnormalised* CE is then the mean error over severities, and the unnormalised relative CE the mean
of ``E[c][s] − E_clean``. Every function here is pure: errors in, a number out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

#: AlexNet's top-1 error on ImageNet-C, per corruption and severity 1..5 (Hendrycks & Dietterich,
#: "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019,
#: the normalisation of mCE). Per-severity values as listed by timm (``imagenetc_alexnet_error_rates_list``,
#: ``bits_and_tpu`` branch); their means are the per-corruption AlexNet errors used across ImageNet-C
#: evaluation code, e.g. OpenMMLab mmpretrain's ``get_ce_alexnet()`` (gaussian_noise 0.886428, shot_noise
#: 0.894468, impulse_noise 0.922640, defocus_blur 0.819880, glass_blur 0.826268, motion_blur 0.785948,
#: zoom_blur 0.798360, snow 0.866816, frost 0.826572, fog 0.819324, brightness 0.564592, contrast
#: 0.853204, elastic_transform 0.646056, pixelate 0.717840, jpeg_compression 0.606500); a test checks
#: that the means agree. Per severity, CE stays exact when only some severities are evaluated.
ALEXNET_ERRORS: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}

#: AlexNet's clean top-1 error on the ImageNet validation set, the reference of relative mCE:
#: torchvision's AlexNet (top-1 accuracy 56.522 %), the model Hendrycks & Dietterich evaluated
#: (Table 1 of the paper rounds it to 43.5 %).
ALEXNET_CLEAN_ERROR = 0.43478


def alexnet_errors(corruption: str, severities: Iterable[int]) -> tuple[float, ...] | None:
    """AlexNet's errors on ``corruption`` at the given severities, or None for a corruption without them."""
    table = ALEXNET_ERRORS.get(corruption)
    return None if table is None else tuple(table[s - 1] for s in severities)


def corruption_error(errors: Sequence[float], reference: Sequence[float] | None = None) -> float:
    """CE of one corruption from its errors over severities.

    Args:
        errors: the model's top-1 errors, one per severity.
        reference: the reference model's errors at the same severities; None for the unnormalised CE,
            the mean error.

    Returns:
        The CE, or NaN when the reference makes no errors at all (a ratio with nothing to compare to).
    """
    if reference is None:
        return math.fsum(errors) / len(errors)
    _same_length(errors, reference)
    return _ratio(math.fsum(errors), math.fsum(reference))


def relative_corruption_error(
    errors: Sequence[float],
    clean_error: float,
    reference: Sequence[float] | None = None,
    reference_clean_error: float | None = None,
) -> float:
    """Relative CE: the error *added* by the corruption, normalised by the reference's added error.

    Returns:
        The relative CE; NaN when the reference's added error is not positive (a reference that does
        as well or better under corruption than clean gives no meaningful scale).
    """
    added = math.fsum(e - clean_error for e in errors)
    if reference is None:
        return added / len(errors)
    if reference_clean_error is None:
        raise ValueError("a reference needs its clean error")
    _same_length(errors, reference)
    return _ratio(added, math.fsum(e - reference_clean_error for e in reference))


def mean_corruption_error(values: Iterable[float]) -> float:
    """mCE (or relative mCE): the mean over corruptions; NaN if any term is NaN or there is none."""
    values = list(values)
    return math.fsum(values) / len(values) if values else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _same_length(errors: Sequence[float], reference: Sequence[float]) -> None:
    if len(errors) != len(reference) or not errors:
        raise ValueError(
            f"errors and reference must cover the same, non-empty severities ({len(errors)} vs {len(reference)})"
        )
