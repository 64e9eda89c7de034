"""The report's section on representation collapse, its appendix and figures, and the terminal's collapse tables."""

from __future__ import annotations

import pandas as pd

from ellrobust.report import collapse_tables
from ellrobust.report.legend import Labels
from ellrobust.report.render_markdown import escape, heading, image, table
from ellrobust.report.run_folder import Run
from ellrobust.report.sections import ReportInput, Section, absent, report_section, terminal_tables
from ellrobust.report.table_model import Table
from ellrobust.results import ELLIPTICAL_METRICS


def collapse_section(inp: ReportInput) -> list[str]:
    df, figures = inp.df, inp.figures
    out = [heading(2, "Representation collapse")]
    metrics = collapse_tables.collapse_metrics(df)
    if not metrics:
        return [*out, absent("pass `--collapse`")]
    out.append(
        "Per-layer statistics of the token representations on the clean images, each with a 95 % t-interval over "
        "images in parentheses; A − B columns are paired differences on the same images (95 % paired t-interval). "
        "Token cosine similarity is the mean cosine between all pairs of distinct tokens of a layer: the closer to 1, "
        "the more the tokens have collapsed onto one direction. The last row averages the later half of the layers "
        "per image first. Adversarial-image and per-head rows are in the appendix."
    )
    for metric in metrics:
        out.append(heading(3, collapse_tables.COLLAPSE_TITLES.get(metric, metric)))
        variants = collapse_tables.collapse_table(df, metric)
        for label, t in variants:
            if len(variants) > 1:
                out.append(f"Setting **{escape(label)}**:")
            out.append(table(t))
        if not variants:
            out.append("_Only adversarial-image or per-head rows: see the appendix._")
        if f"collapse_{metric}" in figures:
            out.append(image(f"{metric} per layer", figures[f"collapse_{metric}"]))
    if "elliptical_m" in figures:
        out += [
            "The elliptical metric m (what elliptical attention scales each head's queries by, max-scaled to "
            "(0, 1]: 1 on every coordinate is standard attention) per layer, on the clean images and on each "
            "attack's adversarial images (those the model was attacked on, so a different image set): its mean "
            "over a head's coordinates and their spread, averaged over heads.",
            image("The elliptical metric m per layer, clean and adversarial", figures["elliptical_m"]),
        ]
    return out


def collapse_appendix(inp: ReportInput) -> list[str]:
    """Each collapse metric on adversarial images and per head."""
    out = []
    for metric in collapse_tables.collapse_metrics(inp.df):
        other = collapse_tables.collapse_other_table(inp.df, metric, inp.labels)
        if other is not None:
            out += [
                heading(3, f"{collapse_tables.COLLAPSE_TITLES.get(metric, metric)} on adversarial images and per head"),
                "Adversarial images are each model's own (the clean-correct images it was attacked on), so these "
                "rows have no paired differences.",
                table(other),
            ]
    return out


def _figures(df: pd.DataFrame, runs: list[Run]) -> dict[str, object]:
    from ellrobust.report import collapse_plots

    drawn: dict[str, object] = {
        f"collapse_{m}": collapse_plots.collapse_figure(df, m)
        for m in collapse_tables.collapse_metrics(df)
        if m not in ELLIPTICAL_METRICS
    }
    drawn["elliptical_m"] = collapse_plots.elliptical_m_figure(df)
    return drawn


def _paper(df: pd.DataFrame, labels: Labels) -> list[tuple[str, Table | None]]:
    """One table per collapse metric and setting, on the clean images."""
    return [
        (f"collapse-{metric}-{i}".replace("_", "-"), t)
        for metric in collapse_tables.collapse_metrics(df)
        for i, (_, t) in enumerate(collapse_tables.collapse_table(df, metric))
    ]


report_section(
    Section(
        "Representation collapse",
        70,
        collapse_section,
        always=True,
        appendix=collapse_appendix,
        figures=_figures,
        paper=_paper,
    )
)


@terminal_tables("collapse", order=70)
def _collapse_tables(df: pd.DataFrame, labels: Labels) -> list[Table | None]:
    """Each collapse metric per layer on the clean images, then on adversarial images and per head."""
    found: list[Table | None] = []
    for metric in collapse_tables.collapse_metrics(df):
        found += [t for _, t in collapse_tables.collapse_table(df, metric)]
        found.append(collapse_tables.collapse_other_table(df, metric, labels))
    return found
