"""The report's section on paired differences, and the calibration tables shown with clean accuracy.

Registers the section "Paired differences" and the terminal's calibration and paired tables.
"""

from __future__ import annotations

import pandas as pd

from ellrobust.report import paired_tables
from ellrobust.report.legend import Labels
from ellrobust.report.number_format import format_level
from ellrobust.report.render_markdown import heading, table
from ellrobust.report.sections import ReportInput, Section, absent, report_section, terminal_tables
from ellrobust.report.table_model import Table
from ellrobust.stats.decisions import ALPHA, POWER

#: What Holm's adjustment runs over, said with the paired tables (the verdict's rules say it too).
FAMILY = (
    "These are secondary analyses: the verdict judges each claim by its primary endpoint alone. Holm's adjustment "
    "runs within each family of a pair of models in a run: clean accuracy; the attacks (each attack × ε × m_grad × "
    "precision, the worst case, transferred images, the sign test on ε*); the corruption × severity cells."
)


def calibration_parts(df: pd.DataFrame, corruptions: bool) -> list[str]:
    """The calibration tables (clean images in the clean section, corruption cells in the appendix)."""
    errors = paired_tables.calibration_table(df, corruptions)
    differences = paired_tables.calibration_difference_table(df, corruptions)
    out = []
    if errors is not None:
        out += [
            heading(3, "Calibration per corruption and severity" if corruptions else "Calibration"),
            "Top-5 accuracy with its 95 % Wilson interval; the expected calibration error of the max-softmax "
            "confidence (ECE: 15 equal-width bins) and the RMS "
            "calibration error of the paper's code (adaptive bins of 100 images), in %, with 95 % percentile "
            "bootstrap intervals over images (none below 200 images).",
            table(errors),
        ]
    if differences is not None:
        out += [
            "A − B on the same images: top-5 accuracy (score interval, exact McNemar p) and each calibration "
            "error (paired bootstrap interval). Reported beside the verdict, not in its Holm family.",
            table(differences),
        ]
    return out


def paired_section(inp: ReportInput) -> list[str]:
    df, labels = inp.df, inp.labels
    t = paired_tables.paired_table(df, labels)
    if t is None:
        return [heading(2, "Paired differences"), absent("evaluate two or more models in one run")]
    text = (
        "A − B is the difference of accuracies on the same images, in percentage points "
        "(positive: A is more accurate), "
        "with its 95 % score interval for paired proportions (*95 % CI*, also in pp); McNemar p is the exact test "
        "on the images where exactly one model is right. m_grad is the elliptical model's mode. "
    )
    if "Holm p" in t.headers:
        text += (
            f"{FAMILY} *Survives Holm* marks, in bold, a difference whose adjusted p is below {ALPHA:g} with the "
            "interval on the same side of 0, and says whom it favours. "
        )
    if paired_tables.DETECTABLE in t.headers:
        text += (
            f"*Detectable* is the smallest difference (pp) this n detects with {format_level(POWER)} power given the "
            "observed discordance, and *n needed* the number of images a difference of the observed size would need, "
            "both at Holm's first-step level α/m (m: the size of its family, in the title), the level an "
            f"adjusted p below {ALPHA:g} is certain to clear; a single test's α would promise power Holm does not give."
        )
    return [heading(2, "Paired differences"), text, table(t)]


report_section(
    Section(
        "Paired differences",
        80,
        paired_section,
        always=True,
        paper=lambda df, labels: [("paired", paired_tables.paired_table(df, labels))],
    )
)


@terminal_tables("calibration", order=50)
def _calibration_tables(df: pd.DataFrame, labels: Labels) -> list[Table | None]:
    """Calibration on the clean images and the pairs' differences (corruption cells: the report's appendix)."""
    return [paired_tables.calibration_table(df), paired_tables.calibration_difference_table(df)]


@terminal_tables("paired", order=60)
def _paired_tables(df: pd.DataFrame, labels: Labels) -> list[Table | None]:
    """The paired differences, then those of every corruption × severity cell."""
    return [paired_tables.paired_table(df, labels), paired_tables.paired_table(df, labels, corruptions=True)]
