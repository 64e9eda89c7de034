"""The gallery: a few clean images beside their adversarial versions from a run's saved files (--save-adversarial).

One gallery shows the pixel-norm attacks (the strongest at its largest ε), another the patch attacks
(the strongest at its smallest number of patches, where the models differ most often).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ellrobust.attacks.patches import PATCH_NORM
from ellrobust.report.number_format import format_eps
from ellrobust.report.plots import plain_text
from ellrobust.report.tables import patch_count
from ellrobust.results import Metric
from ellrobust.results.adversarial_images import adversarial_files, load_adversarial, load_clean

#: Images a gallery shows, at most.
GALLERY_IMAGES = 4


def gallery_figure(run_dir: Path, df: pd.DataFrame, *, patches: bool = False) -> Figure | None:
    """A few images under attack, for the first two models of a run saved with ``--save-adversarial``.

    The attack shown is the run's strongest pixel-norm attack at its largest budget (``patches``: patch
    attack at its smallest number of patches), by the lowest robust accuracy of the first model there (an
    elliptical model in m_grad detach, fp32). The images are those both models classify correctly clean,
    the ones on which the models disagree under attack first, then by index. Per model: the clean image,
    the adversarial one, and the perturbation amplified to the full range (grey is 0, ``±ε`` is black and
    white; ``patches``: the pixels the attack rewrote, on grey), titled with the true class and what the
    model says.
    """
    clean = load_clean(run_dir)
    if clean is None:
        return None
    sets = [load_adversarial(p) for p in adversarial_files(run_dir)]
    shown = _gallery_sets(sets, df, patches)
    if shown is None or any(not np.array_equal(s.index, clean["index"]) for s in shown):
        return None
    first, second = shown
    x = clean["x"]
    # an image a model got wrong clean was not attacked: its x_adv is the clean image, its class wrong
    wrong_clean = [(s.prediction != s.label) & (s.x_adv == x).reshape(len(x), -1).all(1) for s in shown]
    candidates = np.flatnonzero(~wrong_clean[0] & ~wrong_clean[1])
    agree = (first.prediction == first.label) == (second.prediction == second.label)
    order = sorted(candidates.tolist(), key=lambda k: (bool(agree[k]), int(clean["index"][k])))[:GALLERY_IMAGES]
    if not order:
        return None
    fig = Figure(figsize=(8.4, 1.6 * len(order) + 0.7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(order), 6, squeeze=False)
    for r, k in enumerate(order):
        for c, saved in enumerate(shown):
            panels = (
                (x[k], f"image {int(clean['index'][k])}: class {int(clean['label'][k])}"),
                (saved.x_adv[k], f"{saved.model}: {int(saved.prediction[k])}"),
                (_perturbation(saved.x_adv[k], x[k], saved.eps, patches), "patch" if patches else "perturbation"),
            )
            for j, (image, title) in enumerate(panels):
                ax = axes[r][3 * c + j]
                ax.imshow(np.transpose(image, (1, 2, 0)).clip(0, 1), interpolation="nearest")
                ax.set_title(plain_text(title), fontsize="small")
                ax.set_xticks([])
                ax.set_yticks([])
    shown_as = (
        "the pixels it rewrote, on grey" if patches else "the perturbation amplified (grey 0, black and white ±ε)"
    )
    budget = patch_count(first.eps) if patches else f"ε {format_eps(first.eps)}"
    fig.suptitle(
        plain_text(
            f"{first.method} at {budget}: the clean image, the adversarial image (the class the model says)\n"
            f"and {shown_as}"
        ),
        fontsize="medium",
    )
    return fig


def _perturbation(x_adv: np.ndarray, x: np.ndarray, eps: float, patches: bool) -> np.ndarray:
    """What a gallery shows of a perturbation: amplified to ``±eps`` (pixel norms), or the rewritten pixels."""
    if patches:
        changed = (x_adv != x).any(axis=0, keepdims=True)
        return np.where(changed, x_adv, 0.5)
    return (x_adv - x) / (2 * eps) + 0.5


def _gallery_sets(sets: list, df: pd.DataFrame, patches: bool):
    """The two saved sets a gallery shows: the first two models, the strongest attack at its largest budget
    (``patches``: the strongest patch attack at its smallest number of patches)."""
    models = list(dict.fromkeys(df["model"]))
    if len(models) < 2 or not sets:
        return None
    a, b = models[:2]
    usable = [
        s for s in sets if s.m_grad in ("", "detach") and s.precision == "fp32" and (s.norm == PATCH_NORM) == patches
    ]
    largest = (min if patches else max)((s.eps for s in usable), default=None)
    rows = df[(df["metric"] == Metric.ROBUST_ACCURACY.value) & (df["model"] == a) & df["baseline"].eq("")]
    strength = {
        method: value
        for method, eps, mode, value in zip(rows["method"], rows["eps"], rows["m_grad"], rows["value"], strict=True)
        if largest is not None and eps == largest and mode in ("", "detach")
    }
    for method in sorted({s.method for s in usable if s.eps == largest}, key=lambda m: strength.get(m, 1.0)):
        of = {s.model: s for s in usable if s.method == method and s.eps == largest}
        pair = [of.get(a), of.get(b)]
        if all(pair):
            return pair
    return None
