"""Short labels for methods, settings and series, and the legend that spells each label out once.

A row's ``params`` is JSON (``{"steps": 10, "step_size": "0.25*eps", ...}``): exact, but unreadable as
a column header or a figure legend. A label names the method and, only where one method was run with
several settings, the settings that tell them apart (``pgd steps=50``). Collapse rows carry their own
settings (``feature``, ``cls``, ``head``, ``layers``) merged with those of the attack that made the
images; those get a label of their own (``residual, cls``). The report prints :attr:`Labels.legend`
once, so every short label can be traced back to its full parameters.

A *series* is what one line of a plot or one column of a wide table shows: a model, and, only where
they vary, its ``m_grad`` mode, the attack precision, the method or the run it comes from. Keeping
that rule here makes legends and table columns agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from ellrobust.verdict.results_view import split_params

_FEATURES = {
    "residual": "tokens of the residual stream after each block",
    "attention": "output of each block's attention branch",
}


def _canonical(settings: Mapping) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _value_text(value: object) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def settings_text(settings: Mapping) -> str:
    """``{"steps": 10, "attacks": ["fgsm", "pgd"]}`` → ``steps=10, attacks=fgsm+pgd`` (short, for a cell)."""
    return ", ".join(f"{k}={_value_text(v)}" for k, v in settings.items())


def collapse_label(settings: Mapping) -> str:
    """``residual, cls`` / ``attention, no cls, head 2``: what a collapse row measured, in a few words."""
    parts = [str(settings.get("feature", "tokens")), "cls" if settings.get("cls", True) else "no cls"]
    if settings.get("head") is not None:
        parts.append(f"head {settings['head']}")
    return ", ".join(parts)


def _collapse_description(settings: Mapping) -> str:
    feature = str(settings.get("feature", ""))
    text = _FEATURES.get(feature, feature or "tokens")
    text += ", class token " + ("included" if settings.get("cls", True) else "excluded")
    if settings.get("head") is not None:
        text += f", head {settings['head']} only"
    return text


def _attack_description(method: str, settings: Mapping) -> str:
    if method == "worst-case":
        attacks = _value_text(settings.get("attacks", "every attack")).replace("+", ", ")
        norm = f" ({settings['norm']})" if settings.get("norm") else ""
        return f"per image, the worst case over {attacks}{norm}"
    return f"{_paper_name(method)} with {settings_text(settings)}"


def _paper_name(method: str) -> str:
    """A registered attack's name as papers write it where it says more than the method (``apgd``:
    APGD-CE + APGD-T, so that row is never read as AutoAttack); otherwise the method name."""
    from ellrobust.attacks import ATTACKS

    label = ATTACKS.get(method).label if method in ATTACKS else method
    return label if label.lower() != method else method


@dataclass(frozen=True)
class Labels:
    """Short labels of a results table's methods and collapse settings.

    Attributes:
        names: (method, canonical settings JSON) → label, for methods run with settings.
        legend: (label, full description) pairs, in order of first appearance, each label once.
    """

    names: Mapping[tuple[str, str], str]
    legend: tuple[tuple[str, str], ...]

    def method(self, method: str, params: object) -> str:
        """The label of a row's method (its collapse settings and a transfer's source ignored); the bare
        name when it has no settings."""
        settings, _ = split_params(params)
        label = self.names.get((method, _canonical(without_source(settings))), method)
        return f"{label} transferred" if settings.get("transfer") == "crossed" else label


#: The params a transferred measurement adds to its attack's (:func:`ellrobust.run.units.transfer_params`),
#: and the mark of a crossed comparison (each model on the other's images: :func:`ellrobust.measures.paired.crossed`).
TRANSFER_KEYS = ("source", "source_m_grad", "transfer")


def without_source(settings: Mapping) -> dict:
    """An attack's settings without what a transfer adds: the attack the images come from."""
    return {k: v for k, v in settings.items() if k not in TRANSFER_KEYS}


def build_labels(df: pd.DataFrame) -> Labels:
    """Labels for every method run with settings (attacks, worst case) and every collapse setting.

    Attack rows are those with a budget (``eps``), which includes the worst case and collapse rows
    measured on adversarial images; corruption, clean and mCE rows keep their method name (their
    params record provenance and references, which the report states in its own words).
    """
    variants: dict[str, dict[str, dict]] = {}
    collapse: dict[str, dict] = {}
    eps = df["eps"] if "eps" in df else pd.Series(float("nan"), index=df.index)
    for method, params, has_eps in zip(df["method"], df["params"], eps.notna(), strict=True):
        settings, measured = split_params(params)
        settings = without_source(settings)  # a transferred attack is labelled as the attack it transfers
        if has_eps and settings:
            variants.setdefault(str(method), {}).setdefault(_canonical(settings), settings)
        if measured:
            collapse.setdefault(_canonical(measured), measured)
    names: dict[tuple[str, str], str] = {}
    legend: dict[str, str] = {}
    for method, by_key in variants.items():
        keys = list(dict.fromkeys(k for s in by_key.values() for k in s))
        differing = [k for k in keys if len({_canonical({k: s.get(k)}) for s in by_key.values()}) > 1]
        if method == "worst-case" and "norm" in differing:  # each norm's worst case is over its own attacks
            differing = [k for k in differing if k != "attacks"]
        for key, settings in by_key.items():
            suffix = ", ".join(f"{k}={_value_text(settings[k])}" for k in differing if k in settings)
            label = f"{method} {suffix}" if suffix else method
            names[(method, key)] = label
            legend.setdefault(label, _attack_description(method, settings))
    for settings in collapse.values():
        legend.setdefault(collapse_label(settings), _collapse_description(settings))
    return Labels(names, tuple(legend.items()))


def varying(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The columns among ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df and df[c].nunique(dropna=False) > 1]


def series_columns(df: pd.DataFrame, extra: Sequence[str] = ()) -> list[str]:
    """``model`` plus whichever of run, ``extra`` and ``m_grad`` tell rows of ``df`` apart."""
    return ["model", *varying(df, ["run", *extra, "m_grad", "precision"])]


def series_label(row: pd.Series | dict, columns: Sequence[str]) -> str:
    """``deit (m_grad full, run b)``: the model, then the non-empty distinguishing fields."""
    parts = [f"{'m_grad ' if c == 'm_grad' else ''}{row[c]}" for c in columns if c != "model" and row.get(c)]
    return f"{row['model']} ({', '.join(parts)})" if parts else str(row["model"])
