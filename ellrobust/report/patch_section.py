"""The report's section on the patch attacks: accuracy per number of patches, the minimal number of patches,
where the attacks struck, and a gallery row.

A patch budget counts patches of the model's own size (:mod:`ellrobust.attacks.patches`), not a pixel
norm, so the patch attacks (``patch``, ``patch-fool``, ``attention-fool``) have their own table, curve and
gallery instead of columns among the pixel budgets. The paired comparisons per attack and number of
patches are in the section Paired differences (their own Holm family, "patch attacks"); the patch
robustness claim's primary, the sign test on each image's minimal number of patches, is in the Verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ellrobust.report.legend import build_labels, varying
from ellrobust.report.render_markdown import escape, heading, image, table
from ellrobust.report.run_folder import Run
from ellrobust.report.sections import ReportInput, Section, report_section
from ellrobust.report.table_model import Align, Table
from ellrobust.report.tables import has_column, metric_rows, patch_count, robust_table
from ellrobust.results import Metric, load_examples
from ellrobust.verdict.results_view import Lookup, parse_params

#: The attacks whose struck patches the map shows, in order of preference: those that choose by attention.
_MAPPED = ("patch-fool", "attention-fool", "patch")


def minimal_patch_table(df: pd.DataFrame) -> Table | None:
    """Each model's median minimal number of patches over the patch attacks, and the images none broke."""
    rows = metric_rows(df, Metric.MINIMAL_PATCHES_MEDIAN)
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = [*varying(rows, ["run"]), "model", *(c for c in ("m_grad",) if has_column(rows, c))]
    out = []
    for r in rows.to_dict(orient="records"):
        censored = lookup(r, Metric.N_CENSORED)
        attacks = ", ".join(parse_params(r["params"]).get("attacks", []))
        cells = (f"{r['value']:g}", "" if math.isnan(censored) else f"{censored:.0f}", str(int(r["n"])))
        out.append((*(str(r[k]) for k in keys), attacks, *cells))
    headers = (*keys, "over", "median patches", "not broken", "n")
    align = (Align.LEFT,) * (len(keys) + 1) + (Align.RIGHT,) * 3
    return Table(headers, tuple(out), align, title="Minimal number of patches per image (worst case over the attacks)")


def patch_section(inp: ReportInput) -> list[str]:
    """Accuracy per number of patches, the minimal number of patches, the figures; nothing without patch attacks."""
    t = robust_table(inp.df, inp.labels, patches=True)
    if t is None:
        return []
    text = (
        "The patch attacks rewrite whole patches of the model's own size (read from the model), their pixels "
        "free in [0, 1]: a budget is a number of patches, not a pixel norm. *patch-fool* (Fu et al., ICLR 2022) "
        "rewrites the patches the attention points at most, with an attention-aware loss; *attention-fool* "
        "(Lovisotto et al., CVPR 2022) drives the pre-softmax query–key logits towards its patch, through the "
        "elliptical metric; *patch* places squares at the worst of several random positions. Budgets are "
        "nested: an image one patch fooled counts as fooled at two. Each image's *minimal number of patches* "
        "is the smallest budget any patch attack broke it with (0 if misclassified clean; not broken: "
        "censored at the largest): the counterpart of ε*, and what the patch robustness claim's sign test "
        "compares (Verdict). The paired comparison at each attack and budget is in Paired differences."
    )
    out = [heading(2, "Patch attacks"), escape(text), table(t)]
    minimal = minimal_patch_table(inp.df)
    if minimal is not None:
        out.append(table(minimal))
    figures = inp.figures
    if "patch_accuracy" in figures:
        out.append(image("Accuracy vs number of patches, one panel per patch attack", figures["patch_accuracy"]))
    if "patch_map" in figures:
        out += [
            "Where the attacks struck: per model, the share of the attacked images in which the attack rewrote "
            "each patch, at its smallest budget (attention-aware attacks pick the patches the attention points at).",
            image("Share of attacked images per patch", figures["patch_map"]),
        ]
    if "patch_gallery" in figures:
        out += [
            "A few images under the strongest patch attack at its smallest budget (`--save-adversarial`): the "
            "clean image, the adversarial one with the class the model gives it, and the rewritten pixels.",
            image("Patch-attacked images of both models", figures["patch_gallery"]),
        ]
    return out


def struck_patches(examples: pd.DataFrame) -> tuple[str, float, dict[str, np.ndarray]] | None:
    """(attack, budget, model → share of its attacked images per token) for the map, from a run's examples.

    The attack is the first of :data:`_MAPPED` the run has, at its smallest budget; m_grad detach (or a
    plain model's); an image counts when the attack rewrote any pixel of it.
    """
    if "attacked_patch" not in examples:
        return None
    for attack in _MAPPED:
        rows = examples[(examples["method"] == attack) & examples["m_grad"].fillna("").isin(["", "detach"])]
        if rows.empty:
            continue
        budget = float(rows["eps"].min())
        rows = rows[(rows["eps"] == budget) & rows["attacked_patch"].ne("")]
        tokens = {m: [[int(t) for t in s.split()] for s in g["attacked_patch"]] for m, g in rows.groupby("model")}
        size = 1 + max((t for lists in tokens.values() for one in lists for t in one), default=0)
        shares = {}
        for model, lists in tokens.items():
            counts = np.zeros(size)
            for one in lists:
                counts[one] += 1
            shares[model] = counts / max(len(lists), 1)
        return attack, budget, shares
    return None


def _patch_map(run: Run):
    """The heat map of :func:`struck_patches` on the model's patch grid, one panel per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ellrobust.report.plots import plain_text

    examples = load_examples(run.path)
    found = struck_patches(examples) if examples is not None else None
    if found is None:
        return None
    attack, budget, shares = found
    grids = {m: _grid_side(run.meta, m, len(v)) for m, v in shares.items()}
    fig = Figure(figsize=(3.2 * len(shares), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(shares), squeeze=False)[0]
    top = max(float(v.max()) for v in shares.values()) or 1.0
    for ax, (model, share) in zip(axes, shares.items(), strict=True):
        side = grids[model]
        cells = np.zeros(side * side)
        cells[: min(len(share), side * side)] = share[: side * side]
        shown = ax.imshow(cells.reshape(side, side) * 100, cmap="magma", vmin=0, vmax=top * 100)
        ax.set_title(plain_text(model), fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes), label="% of attacked images")
    fig.suptitle(plain_text(f"{attack} at {patch_count(budget)}: where it struck"), fontsize="medium")
    return fig


def _grid_side(meta, model: str, tokens: int) -> int:
    """The side of the model's patch grid: from run.json's architecture, else the smallest square holding ``tokens``."""
    config = ((meta.get("models") or {}).get(model) or {}).get("config") or {}
    size, patch = config.get("img_size"), config.get("patch_size")
    if isinstance(size, int) and isinstance(patch, int) and patch > 0:
        return size // patch
    return math.isqrt(max(tokens - 1, 0)) + 1


def _patch_figures(df: pd.DataFrame, runs: list[Run]) -> dict[str, object]:
    from ellrobust.report import gallery, plots

    one = runs[0] if len(runs) == 1 else None
    return {
        "patch_accuracy": plots.robust_figure(df, build_labels(df), patches=True),
        "patch_map": _patch_map(one) if one is not None else None,
        "patch_gallery": gallery.gallery_figure(one.path, one.table, patches=True) if one is not None else None,
    }


report_section(Section("Patch attacks", 25, patch_section, figures=_patch_figures))
