"""The report's section on corruptions (summary, CE and mCE), its appendix of per-cell tables and figures."""

from __future__ import annotations

import pandas as pd

from ellrobust.report import corruption_tables, paired_tables
from ellrobust.report.legend import Labels
from ellrobust.report.paired_section import FAMILY, calibration_parts
from ellrobust.report.render_markdown import escape, heading, image, table
from ellrobust.report.run_folder import Run
from ellrobust.report.sections import ReportInput, Section, absent, report_section, terminal_tables
from ellrobust.report.setup_section import protocol_lines
from ellrobust.report.table_model import Table
from ellrobust.stats.decisions import MIN_IMAGES


def corruption_section(inp: ReportInput) -> list[str]:
    runs, df, figures = inp.runs, inp.df, inp.figures
    out = [heading(2, "Corruptions")]
    summary, ce, mce = (
        corruption_tables.corruption_summary(df),
        corruption_tables.ce_table(df),
        corruption_tables.mce_difference_table(df),
    )
    if summary is None and ce is None:
        return [*out, absent("pass `--corruption all --severity 1-5`")]
    protocols = list(dict.fromkeys(p for run in runs for p in protocol_lines(run)))
    out.append(
        f"Corruption protocol: {escape(', '.join(protocols)) if protocols else 'not recorded in this run'}. "
        "Per-severity accuracies and the paired comparison of every corruption × severity cell are in the appendix."
    )
    if summary is not None:
        t, norm = summary
        out += [
            heading(3, "Summary per corruption"),
            "Mean accuracy (%) over the severities with its 95 % Wilson interval (at n images: conservative); the mean "
            "paired difference A − B over the severities; how many severity cells survive Holm's adjustment in A's "
            "and in B's favour; and CE "
            + (f"({escape(_NORMALISATIONS.get(norm, norm))})." if norm else "where measured."),
            table(t),
        ]
        if "corruption_difference" in figures:
            out.append(
                image("Paired accuracy difference per corruption and severity", figures["corruption_difference"])
            )
        if "corruption_accuracy" in figures:
            out.append(image("Corruption accuracy by corruption and severity", figures["corruption_accuracy"]))
    if ce is not None:
        out += [
            heading(3, "Corruption error and mCE"),
            "Corruption error (CE) per corruption, summed over severities and normalised by the reference each row "
            "names: AlexNet's errors on ImageNet-C (Hendrycks & Dietterich 2019), or a baseline model's where AlexNet "
            "numbers do not exist; mCE is their mean, relative mCE the same for the drop from clean error. "
            "Lower is better.",
            table(ce),
        ]
    if mce is not None:
        out += [
            "mCE difference on the same images, with a 95 % paired bootstrap interval over images (negative: A has "
            "the lower, better mCE), never narrower than its Student-t interval, so it stays honest at small n; an "
            "interval marked *zero width* (n = 1, or identical per-image differences) supports nothing, nor does "
            f"any interval over fewer than {MIN_IMAGES} images:",
            table(mce),
        ]
    return out


_NORMALISATIONS = {
    "alexnet": "normalised by AlexNet",
    "none": "unnormalised",
    "baseline": "relative to the baseline model",
}


def corruption_appendix(inp: ReportInput) -> list[str]:
    """Accuracy, paired differences and calibration per corruption × severity cell."""
    out = []
    accuracy = corruption_tables.corruption_table(inp.df)
    if accuracy is not None:
        out += [
            heading(3, "Corruption accuracy per severity"),
            "Accuracy (%) with its 95 % Wilson interval; *mean* averages the severities.",
            table(accuracy),
        ]
    cells = paired_tables.paired_table(inp.df, inp.labels, corruptions=True)
    if cells is not None:
        out += [heading(3, "Paired differences per corruption and severity"), FAMILY, table(cells)]
    return out + calibration_parts(inp.df, corruptions=True)


def _figures(df: pd.DataFrame, runs: list[Run]) -> dict[str, object]:
    from ellrobust.report import plots

    return {"corruption_accuracy": plots.corruption_figure(df), "corruption_difference": plots.difference_heatmap(df)}


def _paper(df: pd.DataFrame, labels: Labels) -> list[tuple[str, Table | None]]:
    summary = corruption_tables.corruption_summary(df)
    return [
        ("corruption-summary", summary[0] if summary else None),
        ("mce", corruption_tables.ce_table(df)),
        ("mce-difference", corruption_tables.mce_difference_table(df)),
    ]


report_section(
    Section(
        "Corruptions",
        50,
        corruption_section,
        always=True,
        appendix=corruption_appendix,
        figures=_figures,
        paper=_paper,
    )
)


@terminal_tables("corruptions", order=30)
def _corruption_tables(df: pd.DataFrame, labels: Labels) -> list[Table | None]:
    """The summary per corruption, CE and mCE, the mCE difference."""
    return [t for _, t in _paper(df, labels)]
