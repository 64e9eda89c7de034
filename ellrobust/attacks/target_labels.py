"""Which labels a fixed-budget attack attacks (``--labels``): the true ones, or the model's own clean predictions.

``true`` (the default) attacks the true label of every clean-correct image, and an image is robust when
its adversarial prediction is still the true class. ``predicted`` is what the official Elliptical
Attention code measures (cleverhans' PGD with ``y=None``): every image is attacked, its target is the
class the model predicts on the clean image, and it is robust when that prediction does not change. A
misclassified clean image can then be robust, so robust accuracy is the fraction of images whose
prediction survives the attack, not a fraction of correctly classified ones, and may exceed the clean
accuracy.

The mode is part of a measurement: under ``predicted`` the attack units' params (and so every row, unit
identity and table key built from them) carry ``"labels": "predicted"``; under ``true`` they carry nothing,
so their rows keep the keys and values they always had.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum

from ellrobust.core.errors import UsageError

#: The params key that marks a measurement taken with predicted labels.
LABELS_PARAM = "labels"


class AttackLabels(StrEnum):
    """The labels an attack aims away from, and that its verdict compares with."""

    TRUE = "true"
    PREDICTED = "predicted"


def parse_labels(value: object) -> AttackLabels:
    """``--labels``'s value as an :class:`AttackLabels`.

    Raises:
        UsageError: a value that is not one of them, in one line listing the choices.
    """
    try:
        return AttackLabels(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in AttackLabels)
        raise UsageError(f"--labels must be one of {choices} (got {value!r}).") from None


def labelled_params(params_json: str, labels: AttackLabels | str) -> str:
    """An attack unit's params: the request's, plus ``"labels": "predicted"`` under predicted labels."""
    if AttackLabels(labels) is AttackLabels.TRUE:
        return params_json
    return json.dumps({**json.loads(params_json), LABELS_PARAM: AttackLabels.PREDICTED.value}, sort_keys=True)


def split_labels(params: Mapping[str, object]) -> tuple[dict[str, object], AttackLabels]:
    """An attack unit's params as the attack's own parameters and the label mode they were measured with."""
    own = dict(params)
    return own, AttackLabels(own.pop(LABELS_PARAM, AttackLabels.TRUE.value))
