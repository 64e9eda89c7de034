"""Terminal rendering shared by the commands: rich progress (stderr), result tables (stdout), JSON."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ellrobust.engine import ProgressEvent
from ellrobust.report.frame import format_eps
from ellrobust.results import records

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
    diff = df[df["metric"] == "accuracy_difference"]
    if diff.empty:
        return None
    key = ["model", "baseline", "method", "params", "eps", "severity", "m_grad"]
    wide = df[df["metric"].isin(["accuracy_difference", "difference_ci_low", "difference_ci_high", "mcnemar_p"])]
    wide = wide.pivot_table(index=key, columns="metric", values="value", dropna=False, sort=False).reset_index()
    wide = wide.dropna(subset=["accuracy_difference"])
    table = Table(title="Paired comparison (A − B, 95 % CI, exact McNemar p)")
    for col in ("A", "B", "method", "eps", "sev", "m_grad", "A − B", "95 % CI", "p"):
        table.add_column(col, justify="right" if col in ("eps", "sev", "A − B", "95 % CI", "p") else "left")
    for r in wide.itertuples(index=False):
        table.add_row(
            str(r.model),
            str(r.baseline),
            str(r.method),
            fmt_eps(r.eps),
            "" if pd.isna(r.severity) else str(int(r.severity)),
            "" if pd.isna(r.m_grad) else str(r.m_grad),
            f"{r.accuracy_difference * 100:+.1f} pp",
            f"[{r.difference_ci_low * 100:+.1f}, {r.difference_ci_high * 100:+.1f}]",
            f"{r.mcnemar_p:.3g}",
        )
    return table


def warn_sanity(df: pd.DataFrame) -> int:
    """Print failing sanity checks as warnings on stderr; returns how many failed."""
    failed = df[(df["method"] == "sanity") & (df["value"] < 1)]
    for r in failed.itertuples(index=False):
        detail = json.loads(r.params).get("detail", "") if isinstance(r.params, str) else ""
        mg = f" (m_grad={r.m_grad})" if isinstance(r.m_grad, str) and r.m_grad else ""
        stderr.print(f"[yellow]warning[/yellow]: sanity check {r.metric.removeprefix('sanity_')} failed for {r.model}{mg}: {detail}")
    return len(failed)
