"""The report as one markdown document, assembled from run folders, tables and figure paths.

Every section heading is always present; a section without rows says what was not measured and how
to measure it, so two reports always have the same outline and a reader (or a diff) can tell
"not measured" from "lost". The verdict comes right after the setup: a reader who stops there has
the answer and the numbers behind it; the long per-cell tables wait in the appendix.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ellrobust.core.version import __version__
from ellrobust.report import collapse_tables, corruption_tables, paired_tables, tables
from ellrobust.report.claim_sentences import claim_line
from ellrobust.report.legend import Labels, build_labels
from ellrobust.report.number_format import format_level
from ellrobust.report.render_markdown import bullets, escape, heading, image, table
from ellrobust.report.run_folder import Run
from ellrobust.report.setup_section import protocol_lines, setup_lines_of_runs
from ellrobust.results import Metric
from ellrobust.stats.decisions import ALPHA, MIN_IMAGES, POWER
from ellrobust.verdict.rules import RULES, claims, elliptical_models

#: The section headings, in order (tests and readers rely on them).
SECTIONS = (
    "Setup",
    "Verdict",
    "Clean accuracy",
    "Robust accuracy",
    "Corruptions",
    "Representation collapse",
    "Paired differences",
    "Sanity checks",
    "Appendix: per-cell tables",
)

#: What Holm's adjustment runs over, said with the paired tables (the verdict's rules say it too).
FAMILY = (
    "Holm's adjustment runs over one family per pair of models and run: every paired comparison of those two "
    "models in that run (clean, each attack × ε × m_grad × precision, each corruption × severity)."
)


def render(runs: list[Run], df: pd.DataFrame, figures: Mapping[str, str], report_command: str | None = None) -> str:
    """The whole report; ``figures`` maps figure names (``robust_accuracy``, ...) to relative paths.

    ``report_command`` is the ``ellrobust report`` call that wrote it, when it is not ``eval --report``.
    """
    models = list(pd.unique(df["model"][df["model"] != ""]))
    labels = build_labels(df)
    parts = [
        heading(1, f"Robustness report: {', '.join(models) or 'no models'}"),
        f"Written by ellrobust {escape(__version__)} from {len(runs)} run folder{'s' if len(runs) != 1 else ''}. "
        "Accuracies are percentages of the evaluated images; attack budgets ε are in /255 of the pixel range.",
        *_reproduce(runs, report_command),
        *setup_lines_of_runs(runs, labels),
        *_verdict(runs),
        *_clean(df),
        *_robust(df, labels, figures),
        *_transfer(df, labels),
        *_minimal(df, labels, figures),
        *_corruptions(runs, df, figures),
        *_ood(df),
        *_collapse(df, figures),
        *_paired(df, labels),
        *_sanity(df),
        *_appendix(df, labels),
    ]
    return "\n\n".join(parts) + "\n"


def _reproduce(runs: list[Run], report_command: str | None) -> list[str]:
    """The commands that wrote the runs (recorded in run.json) and the report, so it can be rebuilt."""
    commands = [str(run.meta["command"]) for run in runs if run.meta.get("command")]
    if commands and report_command:
        commands.append(report_command)
    if not commands:
        return []
    lines = "\n".join(commands)
    return [f"Reproduce (offline, from a clone of the repo, CPU):\n\n```bash\n{lines}\n```"]


def _section(title: str) -> str:
    return heading(2, title)


def _absent(how: str) -> str:
    """The line of a section whose rows are absent; ``how`` is trusted markdown saying how to measure them."""
    return f"_Not measured in these runs; {how}._"


def _verdict(runs: list[Run]) -> list[str]:
    out = [_section("Verdict")]
    judged = False
    for run in runs:
        found = claims(run.table, elliptical_models(run.meta))
        if len(runs) > 1:
            out.append(heading(3, f"Run {run.label}"))
        if not found:
            why = (
                "run.json does not say which models are elliptical"
                if not elliptical_models(run.meta)
                else ("it needs an elliptical and a plain model evaluated together")
            )
            out.append(f"_No verdict for this run: {why}._")
            continue
        judged = True
        labels = build_labels(run.table)
        out.append(bullets([f"**{c.status.value}**: {escape(claim_line(c, labels))}" for c in found]))
        missing = _unmeasured(run.table)
        if missing:
            out.append(f"Not measured in this run, so not judged: {', '.join(missing)}.")
    if judged:
        out += ["**Rules**, fixed before looking at any number:", bullets(list(RULES))]
    return out


def _unmeasured(df: pd.DataFrame) -> list[str]:
    """Claims a run could not speak to, with the option that would measure them."""
    missing = []
    if not (df["eps"].notna() & df["metric"].eq(Metric.ROBUST_ACCURACY.value)).any():
        missing.append("robustness under attack (`--attack`)")
    if not df["metric"].eq(Metric.MCE.value).any():
        missing.append("corruption mCE (`--corruption all`)")
    if not (df["metric"].eq(Metric.TOKEN_COSINE.value) & df["method"].eq("collapse")).any():
        missing.append("representation collapse (`--collapse`)")
    if not {"detach", "full"} <= set(df["m_grad"]):
        missing.append("the adaptive attack (`--m-grad both`)")
    return missing


def _clean(df: pd.DataFrame) -> list[str]:
    t = tables.clean_table(df)
    if t is None:
        return [_section("Clean accuracy"), _absent("every evaluation measures it, so the results table is incomplete")]
    with_ci = "95 % CI (%)" in t.headers
    return [
        _section("Clean accuracy"),
        "Accuracy on the unperturbed images" + (", with its 95 % Wilson score interval." if with_ci else "."),
        table(t),
        *_calibration(df, corruptions=False),
    ]


def _calibration(df: pd.DataFrame, corruptions: bool) -> list[str]:
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


def _robust(df: pd.DataFrame, labels: Labels, figures: Mapping[str, str]) -> list[str]:
    out = [_section("Robust accuracy")]
    t = tables.robust_table(df, labels)
    if t is None:
        return [*out, _absent("pass `--attack fgsm,pgd` (see `ellrobust attacks`)")]
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


def _transfer(df: pd.DataFrame, labels: Labels) -> list[str]:
    """The source × target table of ``--transfer``; nothing for a run without it."""
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
    return [_section("Transfer between the models"), text, table(t)]


def _minimal(df: pd.DataFrame, labels: Labels, figures: Mapping[str, str]) -> list[str]:
    """The minimal budgets ε* of ``--attack fmn`` (or ``bisect-<attack>``) per pair of models; nothing without them."""
    t = tables.eps_star_table(df, labels)
    if t is None and "robustness_curve" not in figures:
        return []
    text = (
        "A minimal-norm attack gives, per image and model, the smallest budget ε* that breaks it (0 for an "
        "image misclassified clean), so the robust accuracy at any ε is the fraction of images with ε* > ε. "
        "An image not broken up to the method's eps_max is censored: its ε* is recorded as eps_max and only "
        "known to exceed it, so a median marked ≥ (half or more of the images censored) is a lower bound, and "
        "a pair with both images censored is a tie. The paired sign test on the signs of ε*_A − ε*_B (exact, "
        "ties dropped; the censoring leaves the signs known) is the test that enters Holm's family, beside the "
        "McNemar tests of the fixed-budget attacks; the Hodges–Lehmann difference is the median of the Walsh "
        "averages of ε*_A − ε*_B, and its 95 % interval the Wilcoxon signed-rank test inverted (whose p is "
        "shown as a secondary statistic: it weighs magnitudes that censoring turns into bounds)."
    )
    out = [_section("Minimal budgets ε*"), escape(text)]
    if t is not None:
        out.append(table(t))
    if "robustness_curve" in figures:
        out.append(image("Robust accuracy vs ε from ε*, and the paired difference", figures["robustness_curve"]))
    return out


def _ood(df: pd.DataFrame) -> list[str]:
    """OOD detection on ImageNet-O (``--data imagenet-o``); nothing for a run without it."""
    per_model, paired = tables.ood_table(df), tables.ood_difference_table(df)
    if per_model is None:
        return []
    text = (
        "Each model scores every image by its maximum softmax probability over the logits of ImageNet-O's 200 "
        "classes (Hendrycks et al.'s protocol); ImageNet-O's images are the positive class with the score −MSP, "
        "ImageNet's validation images of the same 200 classes the negative one. AUROC and AUPR are those of "
        "scikit-learn; the intervals and the paired test are DeLong's, whose p enters Holm's family beside the "
        "McNemar tests."
    )
    return [
        _section("Out-of-distribution detection (ImageNet-O)"),
        escape(text),
        *(table(t) for t in (per_model, paired) if t),
    ]


def _corruptions(runs: list[Run], df: pd.DataFrame, figures: Mapping[str, str]) -> list[str]:
    out = [_section("Corruptions")]
    summary, ce, mce = (
        corruption_tables.corruption_summary(df),
        corruption_tables.ce_table(df),
        corruption_tables.mce_difference_table(df),
    )
    if summary is None and ce is None:
        return [*out, _absent("pass `--corruption all --severity 1-5`")]
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


def _collapse(df: pd.DataFrame, figures: Mapping[str, str]) -> list[str]:
    out = [_section("Representation collapse")]
    metrics = collapse_tables.collapse_metrics(df)
    if not metrics:
        return [*out, _absent("pass `--collapse`")]
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


def _paired(df: pd.DataFrame, labels: Labels) -> list[str]:
    t = paired_tables.paired_table(df, labels)
    if t is None:
        return [_section("Paired differences"), _absent("evaluate two or more models in one run")]
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
            "both at Holm's first-step level α/m (m: the size of the pair's family, in the title), the level an "
            f"adjusted p below {ALPHA:g} is certain to clear; a single test's α would promise power Holm does not give."
        )
    return [_section("Paired differences"), text, table(t)]


def _sanity(df: pd.DataFrame) -> list[str]:
    t = tables.sanity_table(df)
    if t is None:
        return [_section("Sanity checks"), _absent("they run with every attack unless `--no-sanity` is given")]
    rows = tables.sanity_rows(df)
    failed = int((rows["value"] < 1).sum())
    verdict = (
        f"All {len(rows)} checks pass."
        if failed == 0
        else f"**{failed} of {len(rows)} checks fail**: the attack numbers they concern may overstate robustness."
    )
    return [_section("Sanity checks"), verdict, table(t)]


def _appendix(df: pd.DataFrame, labels: Labels) -> list[str]:
    out = [_section("Appendix: per-cell tables")]
    accuracy = corruption_tables.corruption_table(df)
    if accuracy is not None:
        out += [
            heading(3, "Corruption accuracy per severity"),
            "Accuracy (%) with its 95 % Wilson interval; *mean* averages the severities.",
            table(accuracy),
        ]
    cells = paired_tables.paired_table(df, labels, corruptions=True)
    if cells is not None:
        out += [heading(3, "Paired differences per corruption and severity"), FAMILY, table(cells)]
    out += _calibration(df, corruptions=True)
    for metric in collapse_tables.collapse_metrics(df):
        other = collapse_tables.collapse_other_table(df, metric, labels)
        if other is not None:
            out += [
                heading(3, f"{collapse_tables.COLLAPSE_TITLES.get(metric, metric)} on adversarial images and per head"),
                "Adversarial images are each model's own (the clean-correct images it was attacked on), so these "
                "rows have no paired differences.",
                table(other),
            ]
    if len(out) == 1:
        out.append("_Nothing beyond the tables above in these runs._")
    return out
