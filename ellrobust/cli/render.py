"""Terminal rendering shared by the commands: rich progress (stderr), result tables (stdout), JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from contextlib import contextmanager

import pandas as pd
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ellrobust.engine import ProgressEvent
from ellrobust.report.frame import Lookup, format_eps, format_p, holm_direction, prepare
from ellrobust.report.labels import build_labels, collapse_label, split_params
from ellrobust.report.tables import PAIRED_METRICS
from ellrobust.results import records
from ellrobust.verdict import ClaimStatus, claims

#: Tables keep their shape when piped (rich would squeeze them into 80 columns).
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, soft_wrap=True)


def fmt_eps(eps: float | None) -> str:
    """A budget as the report writes it (``8/255``), empty when there is none."""
    return "" if eps is None or pd.isna(eps) else format_eps(eps)


@contextmanager
def unit_progress(enabled: bool = True):
    """A rich progress display on stderr, one bar per unit; yields the engine's progress callback."""
    if not enabled:
        yield lambda event: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
        disable=not stderr.is_terminal and not _force(),
    )
    tasks: dict[str, int] = {}

    def callback(event: ProgressEvent) -> None:
        if event.kind == "start":
            tasks[event.label] = progress.add_task(event.label, total=max(event.total, 1))
            if event.total == 0:
                progress.update(tasks[event.label], completed=1)
        elif event.kind == "advance" and event.label in tasks:
            progress.advance(tasks[event.label], event.advance)
        elif event.kind == "end":
            if event.cached:
                tid = progress.add_task(f"{event.label} [dim](saved, skipped)[/dim]", total=1)
                progress.update(tid, completed=1)
            elif event.label in tasks:
                task = progress.tasks[tasks[event.label]]
                progress.update(tasks[event.label], completed=task.total)

    with progress:
        yield callback


def _force() -> bool:
    import os

    return os.environ.get("ELLROBUST_PROGRESS") == "1"


def print_json(df: pd.DataFrame) -> None:
    sys.stdout.write(json.dumps(records(df), indent=1) + "\n")


def accuracy_table(df: pd.DataFrame, title: str) -> Table:
    """Clean and robust accuracy (%): one row per model × m_grad × attack, one column per eps."""
    table = Table(title=title)
    for col in ("model", "m_grad", "method"):
        table.add_column(col)
    robust = df[(df["metric"] == "robust_accuracy")]
    eps_values = sorted(robust["eps"].dropna().unique())
    table.add_column("clean", justify="right")
    for eps in eps_values:
        table.add_column(f"ε={fmt_eps(eps)}", justify="right")
    clean = df[df["metric"] == "clean_accuracy"].set_index("model")["value"]
    for model in clean.index:
        table.add_row(str(model), "", "clean", f"{clean[model] * 100:.1f}", *[""] * len(eps_values))
        rows = robust[robust["model"] == model]
        for (mg, method), group in rows.groupby(["m_grad", "method"], sort=False, dropna=False):
            by_eps = dict(zip(group["eps"], group["value"], strict=True))
            cells = [f"{by_eps[e] * 100:.1f}" if e in by_eps else "" for e in eps_values]
            table.add_row("", "" if pd.isna(mg) else str(mg), str(method), "", *cells)
    return table


def corruption_table(df: pd.DataFrame) -> Table | None:
    """Corruption accuracy (%) averaged over severities per model, with CE and mCE."""
    corr = df[(df["metric"] == "corruption_accuracy") & df["severity"].isna()]
    if corr.empty:
        return None
    table = Table(title="Corruptions (accuracy % averaged over severities; mCE)")
    models = list(dict.fromkeys(corr["model"]))
    table.add_column("corruption")
    for m in models:
        table.add_column(str(m), justify="right")
    for method, group in corr.groupby("method", sort=False):
        by_model = dict(zip(group["model"], group["value"], strict=True))
        table.add_row(str(method), *[f"{by_model[m] * 100:.1f}" if m in by_model else "" for m in models])
    for metric in ("mce", "relative_mce"):
        rows = df[df["metric"] == metric]
        for params, group in rows.groupby("params", sort=False):
            label = _mce_label(metric, params)
            by_model = dict(zip(group["model"], group["value"], strict=True))
            table.add_row(label, *[f"{by_model[m]:.3f}" if m in by_model else "" for m in models])
    frame = prepare(df)
    lookup = Lookup(frame)
    differences = [
        f"{_mce_label('mce', r['params'])} {r['model']} − {r['baseline']}: {r['value']:+.3f} "
        f"[{lookup(r, 'mce_difference_ci_low'):+.3f}, {lookup(r, 'mce_difference_ci_high'):+.3f}]"
        for r in frame[frame["metric"] == "mce_difference"].to_dict(orient="records")
    ]
    if differences:
        table.caption = Text("; ".join(differences) + " (95 % paired bootstrap CI)")
    return table


def _mce_label(metric: str, params: str) -> str:
    try:
        p = json.loads(params)
    except (TypeError, json.JSONDecodeError):
        return metric
    norm = p.get("normalization", "")
    ref = p.get("baseline") or ("AlexNet" if norm == "alexnet" else "")
    return f"{metric} ({norm}{' vs ' + ref if ref and norm != 'alexnet' else ''})" if norm else metric


def paired_table(df: pd.DataFrame) -> Table | None:
    """A − B with its 95 % score interval, exact McNemar p, Holm-adjusted p and whether it survives Holm."""
    diff = df[(df["metric"] == "accuracy_difference") & df["baseline"].notna() & df["baseline"].ne("")]
    if diff.empty:
        return None
    frame = prepare(df)
    lookup = Lookup(frame)
    labels = build_labels(frame)
    rows = [{**r, **{m: lookup(r, m) for m in PAIRED_METRICS}} for r in prepare(diff).to_dict(orient="records")]
    has = {m: any(not pd.isna(r[m]) for r in rows) for m in PAIRED_METRICS}
    precision = any(r["precision"] for r in rows)
    table = Table(
        title="Paired comparison (A − B, 95 % score CI, exact McNemar p; Holm over all paired comparisons of A and B in this run)"
    )
    columns = ["A", "B", "method", "eps", "sev", "m_grad", *(["precision"] if precision else []), "A − B", "95 % CI", "p"]
    columns += ["p Holm", "Holm"] if has["mcnemar_p_adjusted"] else []
    columns += ["detectable"] if has["detectable_difference"] else []
    columns += ["n needed"] if has["n_required"] else []
    for col in columns:
        table.add_column(col, justify="left" if col in ("A", "B", "method", "m_grad", "precision", "Holm") else "right")
    for r in rows:
        cells = [
            r["model"],
            r["baseline"],
            labels.method(r["method"], r["params"]),
            fmt_eps(r["eps"]),
            "" if pd.isna(r["severity"]) else str(int(r["severity"])),
            r["m_grad"],
            *([r["precision"]] if precision else []),
            f"{r['accuracy_difference'] * 100:+.1f} pp",
            f"[{r['difference_ci_low'] * 100:+.1f}, {r['difference_ci_high'] * 100:+.1f}]",
            format_p(r["mcnemar_p"]),
        ]
        if has["mcnemar_p_adjusted"]:
            direction = holm_direction(r["accuracy_difference"], r["difference_ci_low"], r["difference_ci_high"], r["mcnemar_p_adjusted"])
            cells += [format_p(r["mcnemar_p_adjusted"]), {1: "✓ A", -1: "✓ B"}.get(direction, "")]
        if has["detectable_difference"]:
            cells.append("" if pd.isna(r["detectable_difference"]) else f"{r['detectable_difference'] * 100:.1f} pp")
        if has["n_required"]:
            cells.append("" if pd.isna(r["n_required"]) else str(int(r["n_required"])))
        table.add_row(*(Text(str(c)) for c in cells))
    return table


_STATUS_STYLE = {ClaimStatus.SUPPORTED: "green", ClaimStatus.CONTRADICTED: "red", ClaimStatus.INCONCLUSIVE: "yellow"}


def verdict(df: pd.DataFrame, elliptical: Mapping[str, bool]) -> Group | None:
    """The report's verdict lines (:func:`ellrobust.verdict.claims`), one per claim; None when nothing is judged."""
    found = claims(df, elliptical)
    if not found:
        return None
    lines = [Text("Verdict", style="bold")]
    for c in found:
        line = Text()
        line.append(c.status.value, style=_STATUS_STYLE[c.status])
        line.append(f": {c.claim}. {c.evidence}.")
        lines.append(line)
    lines.append(Text("Rules: see README, section Verdict. Holm's family: all paired comparisons of one pair of models in this run.", style="dim"))
    return Group(*lines)


#: The collapse metrics in display order, with their cell format.
_COLLAPSE_FORMATS = {"token_cosine": "{:.3f}", "attention_entropy": "{:.3f}", "effective_rank": "{:.2f}"}


def collapse_table(df: pd.DataFrame) -> Table | None:
    """Layers as rows, models (and each pair's paired difference) as columns, one block per metric.

    Models side by side make the comparison the eye needs (elliptical vs baseline at each layer);
    each cell carries its 95 % interval in brackets where the run wrote one. With attacks in the
    run there is one block per image set: the clean images first, then each attack × eps × m_grad.
    A baseline has no m_grad (''), so its rows are shown next to every m_grad mode of an elliptical
    model, as in the paired comparison. The later-half summary (layer empty) closes each block.
    Returns None when the table holds no collapse rows.
    """
    frame = prepare(df)
    rows = frame[frame["metric"].isin(list(_COLLAPSE_FORMATS)) & frame["baseline"].eq("")]
    if rows.empty:
        return None
    lookup = Lookup(frame)
    labels = build_labels(frame)
    values: dict[tuple, tuple[str, object]] = {}
    modes: dict[tuple, set[str]] = {}  # (method, params of the images, eps) -> m_grad modes of elliptical models
    heads: set[int] = set()
    for r in rows.to_dict(orient="records"):
        head = split_params(r["params"])[1].get("head")
        eps = None if pd.isna(r["eps"]) else float(r["eps"])
        condition = (r["method"], labels.method(r["method"], r["params"]), eps)
        modes.setdefault(condition, set()).update({r["m_grad"]} - {""})
        layer = None if pd.isna(r["layer"]) else int(r["layer"])
        key = (*condition, r["m_grad"], r["metric"], layer, head)
        values[(*key, r["model"])] = r
        if head is not None:
            heads.add(head)
    models = list(dict.fromkeys(rows["model"]))
    pairs: list[tuple[str, str]] = []
    diffs = frame[frame["metric"].str.endswith("_difference") & frame["baseline"].ne("")]
    for r in diffs.to_dict(orient="records"):
        metric = r["metric"].removesuffix("_difference")
        if metric not in _COLLAPSE_FORMATS:
            continue
        head = split_params(r["params"])[1].get("head")
        eps = None if pd.isna(r["eps"]) else float(r["eps"])
        layer = None if pd.isna(r["layer"]) else int(r["layer"])
        key = (r["method"], labels.method(r["method"], r["params"]), eps, r["m_grad"], metric, layer, head)
        values[(*key, (r["model"], r["baseline"]))] = r
        pairs.append((r["model"], r["baseline"]))
    pairs = list(dict.fromkeys(pairs))
    metrics = [m for m in _COLLAPSE_FORMATS if m in set(rows["metric"])]
    layer_ids = sorted({int(v) for v in rows["layer"].dropna()})
    attacked = any(method != "collapse" for method, _, _ in modes)
    first = split_params(rows["params"].iloc[0])[1]
    table = Table(
        title=f"Representation collapse per layer ({collapse_label(first)}; 95 % CI over images in brackets)",
        caption="more collapsed: higher token_cosine, lower effective_rank; A − B: paired difference on the same images",
    )
    for col in (("images", "eps", "m_grad") if attacked else ()) + ("metric", "layer") + (("head",) if heads else ()):
        table.add_column(col, justify="right" if col in ("eps", "layer", "head") else "left")
    for name in models:
        table.add_column(Text(name), justify="right")
    for a, b in pairs:
        table.add_column(Text(f"{a} − {b}"), justify="right")

    def cell(key: tuple, column: object, metric: str) -> str:
        r = values.get((*key, column))
        if r is None and isinstance(column, str):  # a baseline's rows hold for every m_grad mode
            r = values.get((*key[:3], "", *key[4:], column))
        if r is None:
            return ""
        fmt = _COLLAPSE_FORMATS[metric]
        name = metric if isinstance(column, str) else f"{metric}_difference"
        low, high = lookup(r, f"{name}_ci_low"), lookup(r, f"{name}_ci_high")
        sign = "+" if not isinstance(column, str) and r["value"] >= 0 else ""
        text = sign + fmt.format(r["value"])
        return text if pd.isna(low) or pd.isna(high) else f"{text} [{fmt.format(low)}, {fmt.format(high)}]"

    def order(condition: tuple) -> tuple:
        method, label, eps = condition
        return (method != "collapse", label, eps or 0.0)  # clean images first

    for condition in sorted(modes, key=order):
        method, label, eps = condition
        for mode in sorted(modes[condition]) or [""]:
            shown = ("clean" if method == "collapse" else label, fmt_eps(eps), mode) if attacked else ()
            for metric in metrics:
                for layer in [*layer_ids, None]:
                    for head in [None, *sorted(heads)]:
                        key = (method, label, eps, mode, metric, layer, head)
                        cells = [cell(key, name, metric) for name in models] + [cell(key, pair, metric) for pair in pairs]
                        if any(cells):
                            layer_cell = "later half" if layer is None else str(layer)
                            head_cell = (("all" if head is None else str(head)),) if heads else ()
                            table.add_row(*shown, metric, layer_cell, *head_cell, *(Text(c) for c in cells))
                table.add_section()
    return table


def warn_sanity(df: pd.DataFrame) -> int:
    """Print failing sanity checks as warnings on stderr; returns how many failed."""
    failed = df[(df["method"] == "sanity") & (df["value"] < 1)]
    for r in failed.itertuples(index=False):
        detail = json.loads(r.params).get("detail", "") if isinstance(r.params, str) else ""
        mg = f" (m_grad={r.m_grad})" if isinstance(r.m_grad, str) and r.m_grad else ""
        stderr.print(f"[yellow]warning[/yellow]: sanity check {r.metric.removeprefix('sanity_')} failed for {r.model}{mg}: {detail}")
    return len(failed)
