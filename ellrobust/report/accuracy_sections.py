"""The report's sections on accuracy: clean, under attack, transferred, minimal budgets, OOD, sanity checks.

Each registers itself (:func:`~ellrobust.report.sections.report_section`) with the figures it shows,
and the terminal tables ``eval`` prints after the headline accuracy table. Figures import matplotlib
only when drawn, so the terminal never loads it.
"""

from __future__ import annotations

import pandas as pd

from ellrobust.report import tables
from ellrobust.report.legend import Labels, build_labels
from ellrobust.report.paired_section import calibration_parts
from ellrobust.report.render_markdown import escape, heading, image, table
from ellrobust.report.run_folder import Run
from ellrobust.report.sections import ReportInput, Section, absent, report_section, terminal_tables
from ellrobust.report.table_model import Table
from ellrobust.results import Metric, load_examples


def clean_section(inp: ReportInput) -> list[str]:
    df = inp.df
    t = tables.clean_table(df)
    if t is None:
        return [
            heading(2, "Clean accuracy"),
            absent("every evaluation measures it, so the results table is incomplete"),
        ]
    with_ci = "95 % CI (%)" in t.headers
    return [
        heading(2, "Clean accuracy"),
        "Accuracy on the unperturbed images" + (", with its 95 % Wilson score interval." if with_ci else "."),
        table(t),
        *calibration_parts(df, corruptions=False),
    ]


def robust_section(inp: ReportInput) -> list[str]:
    df, labels, figures = inp.df, inp.labels, inp.figures
    out = [heading(2, "Robust accuracy")]
    t = tables.robust_table(df, labels)
    if t is None:
        return [*out, absent("pass `--attack fgsm,pgd` (see `ellrobust attacks`)")]
    half = tables.max_half_width(df, Metric.ROBUST_ACCURACY)
    n = int(df.loc[df["metric"] == Metric.ROBUST_ACCURACY.value, "n"].min())
    text = (
        "Accuracy (%) under each attack and budget ε, with its 95 % Wilson interval in parentheses; "
        "*clean* is ε = 0 and "
        "*worst-case* counts an image as robust only if it survives every attack. "
    )
    if half is not None:
        text += (
            f"At n = {n} these intervals are up to ±{half * 100:.1f} percentage points wide, "
            "so a gap between two models "
            "is judged by the paired test (section Paired differences), not by overlapping intervals."
        )
    else:
        text += f"n = {n}."
    out += [text, table(t)]
    if "robust_accuracy" in figures:
        out.append(image("Robust accuracy vs eps, one panel per attack", figures["robust_accuracy"]))
    if "gallery" in figures:
        out += [
            "A few images under the run's strongest attack at its largest budget (`--save-adversarial`): for "
            "each model the clean image, the adversarial one with the class the model gives it, and the "
            "perturbation amplified; images on which the two models disagree come first.",
            image("Adversarial images of both models", figures["gallery"]),
        ]
    return out


def _robust_figures(df: pd.DataFrame, runs: list[Run]) -> dict[str, object]:
    from ellrobust.report import gallery, plots

    return {
        "robust_accuracy": plots.robust_figure(df, build_labels(df)),
        "gallery": gallery.gallery_figure(runs[0].path, runs[0].table) if len(runs) == 1 else None,
    }


def transfer_section(inp: ReportInput) -> list[str]:
    """The source × target table of ``--transfer``; nothing for a run without it."""
    df, labels = inp.df, inp.labels
    t = tables.transfer_table(df, labels)
    if t is None:
        return []
    text = (
        "Each row attacks one model (the source) and judges its adversarial images by every model of the "
        "run: the diagonal is the white-box accuracy, the other cells the transferred one, with 95 % Wilson "
        "intervals. Images the source got wrong clean are not attacked, so there the target sees the clean "
        "image. A white-box attack that leaves a model more accurate than another model's transferred "
        "images do is a sign of gradient masking: the sanity check `transfer_not_stronger` flags it."
    )
    return [heading(2, "Transfer between the models"), text, table(t)]


def minimal_section(inp: ReportInput) -> list[str]:
    """The minimal budgets ε* of ``--attack fmn`` (or ``bisect-<attack>``) per pair of models; nothing without them."""
    df, labels, figures = inp.df, inp.labels, inp.figures
    t = tables.eps_star_table(df, labels)
    if t is None and "robustness_curve" not in figures:
        return []
    text = (
        "A minimal-norm attack gives, per image and model, the smallest budget ε* that breaks it (0 for an "
        "image misclassified clean), so the robust accuracy at any ε is the fraction of images with ε* > ε. "
        "An image not broken up to the method's eps_max is censored: its ε* is recorded as eps_max and only "
        "known to exceed it, so a median marked ≥ (half or more of the images censored) is a lower bound, and "
        "a pair with both images censored is a tie. The paired sign test on the signs of ε*_A − ε*_B (exact, "
        "ties dropped; the censoring leaves the signs known) enters Holm's adjustment within the attacks' "
        "family, beside the McNemar tests of the fixed-budget attacks (the verdict judges robustness by the "
        "primary on each image's worst case over every attack instead); the Hodges–Lehmann difference is the "
        "median of the Walsh averages of ε*_A − ε*_B, and its 95 % interval the Wilcoxon signed-rank test "
        "inverted (whose p is shown as a secondary statistic: it weighs magnitudes that censoring turns into bounds)."
    )
    out = [heading(2, "Minimal budgets ε*"), escape(text)]
    if t is not None:
        out.append(table(t))
    if "robustness_curve" in figures:
        out.append(image("Robust accuracy vs ε from ε*, and the paired difference", figures["robustness_curve"]))
    return out


def _minimal_examples(runs: list[Run]) -> pd.DataFrame | None:
    """The per-example attack lines (a budget: ε* and fixed-budget outcomes) of every run with a minimal-norm
    method, tagged with the run: the robustness curve reads the one, its per-image worst case both."""
    found = []
    for run in runs:
        if not (run.table["metric"] == "eps_star_median").any():
            continue  # no minimal-norm method: do not read a large per-example table for nothing
        examples = load_examples(run.path)
        if examples is not None and "eps_star" in examples:
            found.append(examples[examples["eps"].notna()].assign(run=run.label))
    return pd.concat(found, ignore_index=True) if found else None


def _minimal_figures(df: pd.DataFrame, runs: list[Run]) -> dict[str, object]:
    from ellrobust.report import curve_plots

    return {"robustness_curve": curve_plots.robustness_curve_figure(df, _minimal_examples(runs))}


def ood_section(inp: ReportInput) -> list[str]:
    """OOD detection on ImageNet-O (``--data imagenet-o``); nothing for a run without it."""
    df = inp.df
    per_model, paired = tables.ood_table(df), tables.ood_difference_table(df)
    if per_model is None:
        return []
    text = (
        "Each model scores every image by its maximum softmax probability over the logits of ImageNet-O's 200 "
        "classes (Hendrycks et al.'s protocol); ImageNet-O's images are the positive class with the score −MSP, "
        "ImageNet's validation images of the same 200 classes the negative one. AUROC and AUPR are those of "
        "scikit-learn; the intervals and the paired test are DeLong's, whose p is the primary of the OOD "
        "claim."
    )
    return [
        heading(2, "Out-of-distribution detection (ImageNet-O)"),
        escape(text),
        *(table(t) for t in (per_model, paired) if t),
    ]


def sanity_section(inp: ReportInput) -> list[str]:
    df = inp.df
    t = tables.sanity_table(df)
    if t is None:
        return [heading(2, "Sanity checks"), absent("they run with every attack unless `--no-sanity` is given")]
    rows = tables.sanity_rows(df)
    failed = int((rows["value"] < 1).sum())
    verdict = (
        f"All {len(rows)} checks pass."
        if failed == 0
        else f"**{failed} of {len(rows)} checks fail**: the attack numbers they concern may overstate robustness."
    )
    return [heading(2, "Sanity checks"), verdict, table(t)]


report_section(
    Section(
        "Clean accuracy",
        10,
        clean_section,
        always=True,
        paper=lambda df, labels: [("clean", tables.clean_table(df))],
        paper_title="Summary",
    )
)
report_section(
    Section(
        "Robust accuracy",
        20,
        robust_section,
        always=True,
        figures=_robust_figures,
        paper=lambda df, labels: [("robust", tables.robust_table(df, labels))],
    )
)
report_section(Section("Transfer between the models", 30, transfer_section))
report_section(Section("Minimal budgets ε*", 40, minimal_section, figures=_minimal_figures))
report_section(Section("Out-of-distribution detection (ImageNet-O)", 60, ood_section))
report_section(Section("Sanity checks", 90, sanity_section, always=True))


@terminal_tables("transfer", order=10)
def _transfer_tables(df: pd.DataFrame, labels: Labels) -> list[Table | None]:
    return [tables.transfer_table(df, labels)]


@terminal_tables("minimal budgets", order=20)
def _eps_star_tables(df: pd.DataFrame, labels: Labels) -> list[Table | None]:
    return [tables.eps_star_table(df, labels)]


@terminal_tables("ood", order=40)
def _ood_tables(df: pd.DataFrame, labels: Labels) -> list[Table | None]:
    return [tables.ood_table(df), tables.ood_difference_table(df)]
