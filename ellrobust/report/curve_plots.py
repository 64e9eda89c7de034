"""The robustness curve: the fraction of images whose minimal budget ε* exceeds ε, per model, with the
per-image worst case over every method of the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ellrobust.report.plots import Budget, in_255, interval_bounds, model_colors, n_text, plain_text
from ellrobust.results import Metric
from ellrobust.stats.inference import paired_difference_interval
from ellrobust.stats.minimal_budgets import (
    fixed_budget_eps,
    robust_curve,
    robust_curve_interval,
    robust_flags,
    worst_case_eps,
)
from ellrobust.verdict.results_view import Lookup, parse_params

#: Points of the ε grid on which the robustness curve is drawn, from 0 to the method's eps_max.
CURVE_POINTS = 200


def minimal_budgets(examples: pd.DataFrame | None) -> dict[Budget, tuple[pd.Series, pd.Series, float]]:
    """Each model's per-image ε* and censored flags (indexed by the image's index in the split) and eps_max,
    per minimal-norm measurement, from a per-example table with a ``run`` column (one run folder's
    ``examples.csv.gz`` each, :func:`ellrobust.results.load_examples`); empty without one.

    The table holds one line per image and grid budget, all with the same ε*; the first is kept.
    """
    if examples is None or "eps_star" not in examples or examples["eps_star"].isna().all():
        return {}
    rows = examples[examples["eps_star"].notna()].copy()
    for column in ("run", "m_grad", "precision", "params"):
        rows[column] = rows[column].astype("string").fillna("").astype(str) if column in rows else ""
    keys = ["run", "model", "method", "params", "m_grad", "precision"]
    out = {}
    for key, group in rows.groupby(keys, sort=False):
        group = group.drop_duplicates("index").set_index("index")
        eps_max = parse_params(key[3]).get("eps_max")
        if eps_max is None:
            continue
        out[key] = (group["eps_star"].astype(float), group["censored"].fillna(0).astype(bool), float(eps_max))
    return out


def _norm_of(method: str, params: str) -> str | None:
    from ellrobust.attacks import ATTACKS

    settings = parse_params(params)
    if settings.get("norm"):
        return str(settings["norm"])
    return ATTACKS.get(method).norm if method in ATTACKS else None


#: Methods whose per-example lines are not one attack's outcomes at a budget: derived, or the sanity attack.
_NOT_AN_ATTACK = ("worst-case", "sanity-pgd-large-eps")


def worst_case_budgets(
    examples: pd.DataFrame | None, budgets: dict[Budget, tuple[pd.Series, pd.Series, float]]
) -> dict[tuple[str, str, str, str, str], tuple[pd.Series, pd.Series, float, tuple[str, ...]]]:
    """Per (run, model, m_grad, precision, norm) with a minimal-norm method: each image's worst-case ε*.

    An image counts as broken at ε if any method of the run broke it at or below ε: the minimum of the
    minimal-norm methods' ε* and of the smallest grid budget at which a fixed-budget attack in the same
    norm broke it (:func:`~ellrobust.stats.minimal_budgets.fixed_budget_eps`; attacks in the same ``m_grad``
    mode, and another model's transferred images in every mode, as the worst-case rows count them).
    The result holds the combined ε* and censored flags (indexed by image), the smallest eps_max of the
    minimal-norm methods (where the combined curve ends) and the methods combined; a group that no
    fixed-budget attack or second minimal-norm method joins is left out (its curve is the method's own).
    """
    if examples is None or not budgets:
        return {}
    lines = examples[examples["eps"].notna() & examples["eps_star"].isna() & ~examples["method"].isin(_NOT_AN_ATTACK)]
    if "severity" in lines:
        lines = lines[lines["severity"].isna()]
    lines = lines.assign(
        **{c: lines[c].astype("string").fillna("").astype(str) for c in ("run", "m_grad", "precision", "params")}
    )
    groups: dict[tuple[str, str, str, str, str], list] = {}
    for (run, model, method, params, mode, precision), value in budgets.items():
        groups.setdefault((run, model, mode, precision, _norm_of(method, params)), []).append((method, value))
    out = {}
    for (run, model, mode, precision, norm), minimal in groups.items():
        index = minimal[0][1][0].index
        eps_max = min(value[2] for _, value in minimal)
        stars = [value[0].reindex(index).to_numpy() for _, value in minimal]
        censored = [
            (value[1].reindex(index).to_numpy()) | (s > eps_max) for (_, value), s in zip(minimal, stars, strict=True)
        ]
        stars = [np.minimum(s, eps_max) for s in stars]
        names = [method for method, _ in minimal]
        mine = lines[(lines["run"] == run) & (lines["model"] == model) & (lines["precision"] == precision)]
        for (method, params, line_mode), attack in mine.groupby(["method", "params", "m_grad"], sort=False):
            transferred = "source" in parse_params(params)
            if _norm_of(method, params) != norm or not (transferred or line_mode == mode):
                continue
            robust = attack.pivot_table(index="eps", columns="index", values="correct", aggfunc="min")
            robust = robust.reindex(columns=index, fill_value=1).fillna(1).astype(bool)
            bound, never = fixed_budget_eps(~robust.to_numpy(), robust.index.to_numpy(), eps_max=eps_max)
            stars.append(bound)
            censored.append(never)
            source = parse_params(params).get("source")
            names.append(f"{method} from {source}" if transferred else method)
        if len(names) < 2:
            continue
        combined, all_censored = worst_case_eps(*stars, censored=censored, eps_max=eps_max)
        key = (run, model, mode, precision, norm)
        out[key] = (pd.Series(combined, index=index), pd.Series(all_censored, index=index), eps_max, tuple(names))
    return out


def _paired_curve(
    a: tuple[pd.Series, pd.Series, float], b: tuple[pd.Series, pd.Series, float], grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust accuracy of A − B at each ε of ``grid`` on the images both have, with Tango's paired interval."""
    common = a[0].index.intersection(b[0].index)
    eps_max = min(a[2], b[2])
    flags_a = robust_flags(a[0][common].to_numpy(), a[1][common].to_numpy(), grid, eps_max=eps_max)
    flags_b = robust_flags(b[0][common].to_numpy(), b[1][common].to_numpy(), grid, eps_max=eps_max)
    a_only, b_only, n = (flags_a & ~flags_b).sum(axis=1), (~flags_a & flags_b).sum(axis=1), len(common)
    limits = np.array([paired_difference_interval(int(x), int(y), n) for x, y in zip(a_only, b_only, strict=True)])
    return (a_only - b_only) / max(n, 1), limits[:, 0], limits[:, 1]


def robustness_curve_figure(df: pd.DataFrame, examples: pd.DataFrame | None) -> Figure | None:
    """Robust accuracy vs ε read from each image's minimal budget ε* (left), and the paired difference A − B
    (right), on a fine grid from 0 to the method's eps_max.

    Left: per model and m_grad mode, the fraction of images with ε* > ε with its pointwise 95 % Wilson
    band, the fixed-budget attacks of the run in the same norm as markers with their Wilson intervals,
    and (dotted) the per-image worst case over every method (:func:`worst_case_budgets`): where a
    fixed-budget attack broke images that the minimal-norm method did not at that ε, it lies below.
    Right: for each pair of models the run compared on ε* (``eps_star_difference`` rows), the difference of
    the two curves on the same images with the pointwise 95 % Tango score interval
    (:func:`~ellrobust.stats.inference.paired_difference_interval`) of the per-image robust flags at each ε.
    ``examples`` is the per-example table of the runs with a ``run`` column; None without ε* draws nothing.
    """
    budgets = minimal_budgets(examples)
    if not budgets:
        return None
    colors = model_colors(df)
    pairs = df[(df["metric"] == Metric.EPS_STAR_DIFFERENCE.value) & df["baseline"].ne("")].to_dict(orient="records")
    pairs = [
        r for r in pairs if (r["run"], r["model"], r["method"], r["params"], r["m_grad"], r["precision"]) in budgets
    ]
    fig = Figure(figsize=(12.0 if pairs else 6.5, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if pairs else 1, squeeze=False).ravel().tolist()
    norms = {_norm_of(key[2], key[3]) for key in budgets}
    scale = 255 if in_255([eps_max for _, _, eps_max in budgets.values()]) and norms == {"Linf"} else 1
    eps_top = max(eps_max for _, _, eps_max in budgets.values())
    methods = _draw_curves(axes[0], budgets, colors, scale)
    _draw_worst_case(axes[0], examples, budgets, colors, scale)
    _draw_fixed_budgets(axes[0], df, methods, norms, colors, scale, eps_top)
    unit = "ε (/255 of the pixel range)" if scale == 255 else "ε ([0, 1] pixel units)"
    _finish_axes(axes[0], unit, eps_top * scale)
    if pairs:
        _draw_differences(axes[1], pairs, budgets, methods, colors, scale)
        axes[1].set_xlim(0, eps_top * scale)
        axes[1].set_xlabel(unit)
    n = n_text(df[df["metric"] == Metric.EPS_STAR_MEDIAN.value])
    fig.suptitle(f"Robust accuracy vs ε from minimal budgets ε* (n = {n}; curves: fraction of images with ε* > ε)")
    return fig


def _draw_curves(ax, budgets: dict, colors: dict, scale: float) -> list[str]:
    """Each measurement's curve with its pointwise Wilson band; returns the minimal-norm methods drawn."""
    methods = list(dict.fromkeys(key[2] for key in budgets))
    for key, (stars, censored, eps_max) in budgets.items():
        run, model, method, _, mode, _ = key
        grid = np.linspace(0.0, eps_max, CURVE_POINTS)
        curve = robust_curve_interval(stars.to_numpy(), censored.to_numpy(), grid, eps_max=eps_max)
        linestyle = ("-", "--", ":", "-.")[(methods.index(method) + (mode == "full")) % 4]
        what = [model, *([method] if len(methods) > 1 else []), *([f"m_grad {mode}"] if mode else [])]
        style = {"color": colors.get((run, model), "C0"), "linestyle": linestyle, "label": plain_text(", ".join(what))}
        ax.fill_between(grid * scale, curve.low * 100, curve.high * 100, color=style["color"], alpha=0.15, linewidth=0)
        ax.plot(grid * scale, curve.robust * 100, **style)
    return methods


def _draw_worst_case(ax, examples: pd.DataFrame, budgets: dict, colors: dict, scale: float) -> None:
    """Dotted: the per-image worst case over every method of the run (:func:`worst_case_budgets`)."""
    for (run, model, mode, _, _), (stars, censored, eps_max, names) in worst_case_budgets(examples, budgets).items():
        grid = np.linspace(0.0, eps_max, CURVE_POINTS)
        robust = robust_curve(stars.to_numpy(), censored.to_numpy(), grid, eps_max=eps_max)
        what = f"{model}, m_grad {mode}" if mode else model
        label = plain_text(f"{what}: per-image worst case of {len(set(names))} methods")
        ax.plot(grid * scale, robust * 100, color=colors.get((run, model), "C0"), linestyle=(0, (1, 1)), label=label)


def _draw_fixed_budgets(
    ax, df: pd.DataFrame, methods: list[str], norms: set, colors: dict, scale: float, eps_top: float
) -> None:
    """The run's fixed-budget attacks in the same norm, as markers with their Wilson intervals."""
    lookup = Lookup(df)
    fixed = df[(df["metric"] == Metric.ROBUST_ACCURACY.value) & df["baseline"].eq("") & df["eps"].notna()]
    fixed = fixed[~fixed["method"].isin(methods + ["worst-case"])]
    fixed = fixed[[_norm_of(m, p) in norms for m, p in zip(fixed["method"], fixed["params"], strict=True)]]
    markers = {method: "osv^D"[i % 5] for i, method in enumerate(dict.fromkeys(fixed["method"]))}
    groups = list(fixed.groupby(["run", "model", "method", "params", "m_grad", "precision"], sort=False))
    for i, (_, series) in enumerate(groups):
        shift = (i - (len(groups) - 1) / 2) * 0.006 * eps_top  # side by side, not on top of each other
        first = series.iloc[0]
        values = series["value"].to_numpy() * 100
        lows, highs = (np.array(v, dtype=float) * 100 for v in interval_bounds(series, lookup, Metric.ROBUST_ACCURACY))
        errors = np.vstack([values - np.nan_to_num(lows, nan=0), np.nan_to_num(highs, nan=0) - values]).clip(min=0)
        mode = f", m_grad {first['m_grad']}" if first["m_grad"] else ""
        ax.errorbar(
            (series["eps"].to_numpy() + shift) * scale,
            values,
            yerr=errors if not np.isnan(lows).all() else None,
            fmt=markers[first["method"]],
            color=colors.get((first["run"], first["model"]), "C0"),
            markerfacecolor="none" if first["m_grad"] == "full" else None,
            capsize=3,
            label=plain_text(f"{first['model']}: {first['method']} at fixed ε{mode}"),
        )


def _finish_axes(ax, unit: str, right: float) -> None:
    ax.set_xlim(0, right)
    ax.set_ylim(-2, 102)  # markers at 0 % stay whole
    ax.set_xlabel(unit)
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title("Robust accuracy from ε*\n(bands, error bars: pointwise 95 % Wilson)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize="x-small")  # the curves fall to 0 % well before eps_max: room there


def _draw_differences(ax, pairs: list[dict], budgets: dict, methods: list[str], colors: dict, scale: float) -> None:
    """For each pair compared on ε*, the difference of the two curves on the same images with its
    pointwise 95 % Tango score interval."""
    for r in pairs:
        a = budgets[(r["run"], r["model"], r["method"], r["params"], r["m_grad"], r["precision"])]
        b_key = (r["run"], r["baseline"], r["method"], r["params"])
        b = budgets.get((*b_key, r["m_grad"], r["precision"]), budgets.get((*b_key, "", r["precision"])))
        if b is None:
            continue
        grid = np.linspace(0.0, min(a[2], b[2]), CURVE_POINTS)
        diff, low, high = _paired_curve(a, b, grid)
        what = [*([r["method"]] if len(methods) > 1 else []), *([f"m_grad {r['m_grad']}"] if r["m_grad"] else [])]
        label = f"{r['model']} − {r['baseline']}" + (f" ({', '.join(what)})" if what else "")
        color = colors.get((r["run"], r["model"]), "C0")
        ax.fill_between(grid * scale, low * 100, high * 100, color=color, alpha=0.15, linewidth=0)
        ax.plot(grid * scale, diff * 100, color=color, label=plain_text(label))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("A − B robust accuracy (pp)")
    ax.set_title("Paired difference A − B on the same images\n(band: pointwise 95 % Tango score)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
