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
from ellrobust.report.claim_sentences import claim_line
from ellrobust.report.legend import build_labels
from ellrobust.report.render_markdown import bullets, escape, heading, table
from ellrobust.report.run_folder import Run
from ellrobust.report.sections import ReportInput, ordered_sections
from ellrobust.report.setup_section import setup_lines_of_runs
from ellrobust.report.summary_table import summary_table
from ellrobust.verdict.rules import RULES, claims, elliptical_models, unmeasured

#: Present in every report, before and after the registered sections.
OPENING, CONTENTS, APPENDIX = ("Summary", "Verdict"), "Contents", "Appendix: per-cell tables"


def always_present() -> tuple[str, ...]:
    """The section headings every report has, in order (tests and readers rely on them)."""
    return (*OPENING, CONTENTS, "Setup", *(s.title for s in ordered_sections() if s.always), APPENDIX)


def render(runs: list[Run], df: pd.DataFrame, figures: Mapping[str, str], report_command: str | None = None) -> str:
    """The whole report; ``figures`` maps figure names (``robust_accuracy``, ...) to relative paths.

    The answer first: the summary table and the verdict, then a table of contents, the setup, the
    registered sections (:mod:`~ellrobust.report.sections`) in their order, and their per-cell
    appendices, each folded in a ``<details>`` block. ``report_command`` is the ``ellrobust report``
    call that wrote it, when it is not ``eval --report``.
    """
    models = list(pd.unique(df["model"][df["model"] != ""]))
    inp = ReportInput(runs, df, build_labels(df), figures)
    opening = [
        heading(1, f"Robustness report: {', '.join(models) or 'no models'}"),
        f"Written by ellrobust {escape(__version__)} from {len(runs)} run folder{'s' if len(runs) != 1 else ''}. "
        "Accuracies are percentages of the evaluated images; attack budgets ε are in /255 of the pixel range.",
        *_summary(df),
        *_verdict(runs),
    ]
    body = [*_reproduce(runs, report_command), *setup_lines_of_runs(runs, inp.labels)]
    appendix = [heading(2, APPENDIX)]
    for section in ordered_sections():
        body += section.body(inp)
        found = section.appendix(inp) if section.appendix else []
        appendix += [folded(f"{section.title}: per-cell tables", found)] if found else []
    if len(appendix) == 1:
        appendix.append("_Nothing beyond the tables above in these runs._")
    contents = [heading(2, CONTENTS), bullets(_links([*body, *appendix]))]
    return "\n\n".join([*opening, *contents, *body, *appendix]) + "\n"


def _summary(df: pd.DataFrame) -> list[str]:
    found = summary_table(df)
    if found is None:
        return [heading(2, "Summary"), "_No clean accuracy in these runs, so no summary._"]
    note = f" ({escape(found.caption)})" if found.caption else ""
    return [heading(2, "Summary"), f"Accuracies and mCE in %{note}.", table(found)]


def folded(title: str, parts: list[str]) -> str:
    """Markdown parts in a collapsible block (GitHub and most renderers fold ``<details>``)."""
    return "\n\n".join([f"<details><summary>{escape(title)}</summary>", *parts, "</details>"])


def _links(parts: list[str]) -> list[str]:
    """A link to every level-2 heading among ``parts``, with GitHub's anchors."""
    titles = [p.removeprefix("## ") for p in parts if p.startswith("## ")]
    return [f"[{t}](#{anchor(t)})" for t in titles]


def anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _reproduce(runs: list[Run], report_command: str | None) -> list[str]:
    """The commands that wrote the runs (recorded in run.json) and the report, so it can be rebuilt."""
    commands = [str(run.meta["command"]) for run in runs if run.meta.get("command")]
    if commands and report_command:
        commands.append(report_command)
    if not commands:
        return []
    lines = "\n".join(commands)
    return [f"Reproduce (offline, from a clone of the repo, CPU):\n\n```bash\n{lines}\n```"]


def _verdict(runs: list[Run]) -> list[str]:
    out = [heading(2, "Verdict")]
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
        out.append(bullets([f"**{c.status.value}**: {escape(claim_line(c))}" for c in found]))
        missing = unmeasured(run.table)
        if missing:
            out.append(f"Not measured in this run, so not judged: {', '.join(missing)}.")
    if judged:
        out += ["**Rules**, fixed before looking at any number:", bullets(list(RULES))]
    return out
