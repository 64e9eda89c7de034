"""Per-image OOD scores (imagenet-o): what each model's AUROC and AUPR are computed from, in a file of their own.

An out-of-distribution image has no class, so it has no place in the per-example outcomes
(:mod:`ellrobust.results.per_image`, one 0/1 per image of the selection). Its score does: the run
folder's ``ood_scores.csv.gz`` holds one line per (model, image) with the image's ``index`` in the
dataset, its ``ood`` flag (1: an ImageNet-O image) and the model's maximum softmax probability
``msp``, so that a reader can recompute every OOD number of the table (AUROC of −MSP, OOD positive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ellrobust.core.readback import reading
from ellrobust.results.per_image import save_csv_gz

OOD_SCORES_FILE = "ood_scores.csv.gz"
#: The columns of the per-image OOD scores, in order.
OOD_SCORE_COLUMNS = ("model", "index", "ood", "msp")


def scores_frame(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], indices: Sequence[int]) -> pd.DataFrame:
    """One line per model and image: ``scores`` maps a model to (MSP, OOD flags), both in the order of ``indices``."""
    frames = [
        pd.DataFrame(
            {
                "model": model,
                "index": list(indices),
                "ood": np.asarray(ood, dtype=np.int8),
                "msp": np.asarray(msp, dtype=float),
            }
        )
        for model, (msp, ood) in scores.items()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(OOD_SCORE_COLUMNS))


def save_scores(frame: pd.DataFrame, run_dir: Path) -> None:
    """Write ``ood_scores.csv.gz`` (atomically; identical runs, identical bytes)."""
    save_csv_gz(frame, Path(run_dir) / OOD_SCORES_FILE)


def load_scores(run_dir: Path) -> pd.DataFrame | None:
    """A run folder's per-image OOD scores, or None when the run measured none.

    Only an empty ``msp`` (NaN logits) is missing: a model's name is text, even one that reads as ``nan``.
    """
    path = Path(run_dir) / OOD_SCORES_FILE
    if not path.is_file():
        return None
    with reading(path, "OOD scores"):
        return pd.read_csv(path, dtype={"model": str}, keep_default_na=False, na_values={"msp": [""]})
