"""The report as one markdown document, assembled from run folders, tables and figure paths.

Every section heading is always present; a section without rows says what was not measured and how
to measure it, so two reports always have the same outline and a reader (or a diff) can tell
"not measured" from "lost".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ellrobust.report import tables
from ellrobust.report.frame import Z95, format_eps
from ellrobust.report.markdown import Align, Table, bullets, escape, heading, image, table
from ellrobust.version import __version__

#: The section headings, in order (tests and readers rely on them).
SECTIONS = (
    "Setup",
    "Clean accuracy",
    "Robust accuracy",
    "Corruptions",
    "Representation collapse",
    "Paired differences",
    "Sanity checks",
)

COLLAPSE_TITLES = {
    "token_cosine": "Token cosine similarity",
    "attention_entropy": "Attention entropy",
    "effective_rank": "Effective rank",
}


@dataclass(frozen=True)
class Run:
    """One run folder as the report sees it.

    Attributes:
        label: Short name used in tables and legends when several runs are combined.
        path: The folder.
        meta: Its ``run.json`` (empty when the folder has none).
        table: Its results, :func:`~ellrobust.report.frame.prepare`-d with ``run == label``.
    """

    label: str
    path: Path
    meta: Mapping
    table: pd.DataFrame


def render(runs: list[Run], df: pd.DataFrame, figures: Mapping[str, str], report_command: str | None = None) -> str:
    """The whole report; ``figures`` maps figure names (``robust_accuracy``, ...) to relative paths.

    ``report_command`` is the ``ellrobust report`` call that wrote it, when it is not ``eval --report``.
    """
    models = list(pd.unique(df["model"][df["model"] != ""]))
    parts = [
        heading(1, f"Robustness report: {', '.join(models) or 'no models'}"),
        f"Written by ellrobust {escape(__version__)} from {len(runs)} run folder{'s' if len(runs) != 1 else ''}. "
        "Accuracies are percentages of the evaluated images; attack budgets ε are in /255 of the pixel range.",
        *_reproduce(runs, report_command),
        *_setup(runs),
        *_clean(df),
        *_robust(df, figures),
        *_corruptions(df, figures),
        *_collapse(df, figures),
        *_paired(df),
        *_sanity(df),
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


def _setup(runs: list[Run]) -> list[str]:
    out = [_section("Setup")]
    for run in runs:
        out.append(heading(3, f"Run {run.label}"))
        out.append(bullets(_setup_lines(run)))
        out.append(table(_models_table(run)))
    return out


def _setup_lines(run: Run) -> list[str]:
    meta = run.meta
    lines = [f"**folder**: {escape(run.path)}"]
    if not meta:
        return [*lines, "**run.json**: missing; the setup below is read from the results table alone."]
    cfg, data, env = meta.get("config", {}), meta.get("dataset", {}), meta.get("environment", {})
    lines.append(
        f"**dataset**: {escape(data.get('name', '?'))} (split {escape(data.get('split', '?'))}, "
        f"{data.get('num_classes', '?')} classes, data digest {escape(data.get('digest', '?'))}); "
        f"**n** = {data.get('n', '?')} images; **seed** {cfg.get('seed', '?')}"
    )
    attacks = cfg.get("attacks") or []
    if attacks:
        names = "; ".join(
            a["name"] + (f" ({tables.settings_text(a['params'])})" if a.get("params") else "") for a in attacks
        )
        eps = ", ".join(format_eps(e) for e in cfg.get("eps") or []) or "each attack's default"
        lines.append(f"**attacks**: {escape(names)}; ε {escape(eps)}; m_grad {escape(cfg.get('m_grad', '?'))}")
    if cfg.get("corruptions"):
        severities = ", ".join(map(str, cfg.get("severities") or []))
        source = cfg.get("corruption_source") or "generated on the fly"
        lines.append(
            f"**corruptions**: {escape(', '.join(cfg['corruptions']))}; severities {severities}; {escape(source)}"
        )
    if cfg.get("collapse"):
        lines.append("**collapse metrics**: per layer")
    lines.append(
        "**versions**: "
        + escape(", ".join(f"{k} {env[k]}" for k in ("ellrobust", "torch", "torchattacks", "python") if env.get(k)))
    )
    gpu = env.get("cuda") or "none"
    lines.append(
        f"**hardware**: {escape(env.get('platform', '?'))}; {env.get('cpu_count', '?')} CPUs "
        f"({env.get('torch_threads', '?')} torch threads); GPU {escape(gpu)}; device {escape(cfg.get('device', '?'))}"
    )
    wall = meta.get("wall_time_s")
    compute = meta.get("unit_seconds")
    line = f"**wall time**: {_duration(wall) if isinstance(wall, int | float) else '?'} (last invocation)"
    if isinstance(compute, int | float):
        line += f"; computing every unit took {_duration(compute)} (resumed units keep their first time)"
    lines.append(line)
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _models_table(run: Run) -> Table:
    """Models with checkpoint digests (from run.json, else from the results' checkpoint column)."""
    models = run.meta.get("models") or {}
    files = dict(
        zip(
            run.meta.get("config", {}).get("models", []),
            run.meta.get("config", {}).get("checkpoints", []),
            strict=False,
        )
    )
    if not models:
        rows = run.table[(run.table["model"] != "") & (run.table["checkpoint"] != "")].drop_duplicates("model")
        models = {r["model"]: {"checkpoint": r["checkpoint"]} for r in rows.to_dict(orient="records")}
    out = []
    for name, info in models.items():
        cfg = info.get("config") or {}
        arch = (
            f"{cfg['embed_dim']}×{cfg['depth']}×{cfg['num_heads']}, patch {cfg['patch_size']}, {cfg['img_size']} px"
            if cfg
            else ""
        )
        elliptical = {True: "yes", False: "no"}.get(info.get("elliptical"), "?")
        layers = ", ".join(map(str, cfg.get("elliptical_layers") or [])) or ("none" if cfg else "")
        out.append(
            (name, info.get("checkpoint", "?"), info.get("weights") or files.get(name) or "?", elliptical, arch, layers)
        )
    headers = ("model", "checkpoint digest", "weights", "elliptical", "width×depth×heads", "elliptical layers")
    return Table(headers, tuple(out), (Align.LEFT,) * len(headers))


def _clean(df: pd.DataFrame) -> list[str]:
    t = tables.clean_table(df)
    if t is None:
        return [_section("Clean accuracy"), _absent("every evaluation measures it, so the results table is incomplete")]
    return [
        _section("Clean accuracy"),
        "Accuracy on the unperturbed images, with a 95 % binomial (Wald) interval.",
        table(t),
    ]


def _robust(df: pd.DataFrame, figures: Mapping[str, str]) -> list[str]:
    out = [_section("Robust accuracy")]
    t = tables.robust_table(df)
    if t is None:
        return [*out, _absent("pass `--attack fgsm,pgd` (see `ellrobust attacks`)")]
    n = int(df.loc[df["metric"] == "robust_accuracy", "n"].min())
    out.append(
        "Accuracy (%) under each attack and budget ε; *clean* is ε = 0 and *worst-case* counts an image as robust "
        f"only if it survives every attack. At n = {n} a 95 % interval spans up to ±{Z95 * 50 / math.sqrt(n):.1f} "
        "percentage points, so smaller gaps between models need the paired test below."
    )
    out.append(table(t))
    if "robust_accuracy" in figures:
        out.append(image("Robust accuracy vs eps, one panel per attack", figures["robust_accuracy"]))
    return out


def _corruptions(df: pd.DataFrame, figures: Mapping[str, str]) -> list[str]:
    out = [_section("Corruptions")]
    acc, ce = tables.corruption_table(df), tables.ce_table(df)
    if acc is None and ce is None:
        return [*out, _absent("pass `--corruption all --severity 1-5`")]
    if acc is not None:
        out += [
            heading(3, "Corruption accuracy"),
            "Accuracy (%) per corruption and severity; *mean* averages the severities.",
            table(acc),
        ]
        if "corruption_accuracy" in figures:
            out.append(image("Corruption accuracy by corruption and severity", figures["corruption_accuracy"]))
    if ce is not None:
        out += [
            heading(3, "Corruption error and mCE"),
            "Corruption error (CE) per corruption, summed over severities and normalised by the reference each row "
            "names: AlexNet's errors on ImageNet-C (Hendrycks & Dietterich 2019), or a baseline model's where AlexNet "
            "numbers do not exist; mCE is their mean, relative mCE the same for the drop from clean error. Lower is better.",
            table(ce),
        ]
    return out


def _collapse(df: pd.DataFrame, figures: Mapping[str, str]) -> list[str]:
    out = [_section("Representation collapse")]
    metrics = tables.collapse_metrics(df)
    if not metrics:
        return [*out, _absent("pass `--collapse`")]
    out.append(
        "Per-layer statistics of the token representations. Token cosine similarity is the mean cosine between "
        "all pairs of distinct tokens of a layer: the closer to 1, the more the tokens have collapsed onto one direction."
    )
    for metric in metrics:
        t = tables.collapse_table(df, metric)
        out += [heading(3, COLLAPSE_TITLES.get(metric, metric)), table(t)]
        if f"collapse_{metric}" in figures:
            out.append(image(f"{metric} per layer", figures[f"collapse_{metric}"]))
    return out


def _paired(df: pd.DataFrame) -> list[str]:
    t = tables.paired_table(df)
    if t is None:
        return [_section("Paired differences"), _absent("evaluate two or more models in one run")]
    return [
        _section("Paired differences"),
        "A − B is the difference of accuracies on the same images, in percentage points (positive: A is more accurate); "
        "the 95 % interval is a Wald interval on the per-image differences and p is the exact McNemar test on the images "
        "where exactly one model is right. m_grad is the elliptical model's mode.",
        table(t),
    ]


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
