"""The adversarial images of a run (``--save-adversarial``): one safetensors file per attack measurement.

A file holds one model's images under one attack setting (method, params, budget, ``m_grad``,
precision), for every image of the run's selection, in selection order:

=============  ==================  ========================================================================
tensor         dtype, shape        what
=============  ==================  ========================================================================
``index``      int64, (N,)         the image's index in the evaluated split (``index`` of ``examples.csv.gz``)
``x_adv``      float32, (N,C,H,W)  the image the verdict was taken on, in [0, 1]
``label``      int64, (N,)         the true class
``prediction``  int64, (N,)        the class the model predicted on ``x_adv`` (a strict fp32 forward pass)
=============  ==================  ========================================================================

``x_adv`` is the attack's output for the images this budget attacked; the adversarial image of the
smaller budget that already fooled the model for images fooled there (budgets are nested, and that
image lies inside this budget's ball too); the clean image for images the model got wrong clean
(not attacked: no perturbation needed). So the file and the per-example table agree image by image:
running the model on ``x_adv`` gives ``prediction``, the same as ``examples.csv.gz`` records, and
``prediction == label`` is ``correct``. The header's metadata names the measurement (``model``,
``method``, ``params``, ``eps``, ``m_grad``, ``precision``, ``norm``) and the ellrobust version.

Files live in the run folder's ``adversarial/``; :func:`find_adversarial` finds one by its
measurement. Beside them, ``clean.safetensors`` holds the clean images of the selection once
(``index``, ``x``, ``label``; :func:`load_clean`), so that ``x_adv − x`` is each image's perturbation
without the dataset at hand. numpy and any safetensors reader load them
(``safetensors.numpy.load_file``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ellrobust.core.errors import quote
from ellrobust.core.files import atomic_write, require_free_space
from ellrobust.core.readback import DamagedFileError, reading

ADVERSARIAL_DIR = "adversarial"
#: The metadata every file's header carries, in this order.
METADATA_FIELDS = ("model", "method", "params", "eps", "m_grad", "precision", "norm")
_HEADER_BYTES = 1 << 16  # generous room for the safetensors header beside the arrays


@dataclass(frozen=True)
class AdversarialSet:
    """One model's images under one attack measurement, as saved (see the module docstring)."""

    model: str
    method: str
    params: str
    eps: float
    m_grad: str
    precision: str
    norm: str
    index: np.ndarray
    x_adv: np.ndarray
    label: np.ndarray
    prediction: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.index)
        shapes = {"x_adv": self.x_adv.shape[:1], "label": self.label.shape, "prediction": self.prediction.shape}
        wrong = [name for name, shape in shapes.items() if shape != (n,)]
        if wrong or self.x_adv.ndim != 4:
            what = ", ".join(wrong) or "x_adv"
            raise ValueError(f"adversarial set of {self.model!r}: {what} do not match {n} images")

    @property
    def stem(self) -> str:
        """The file's name without suffix: readable fields, and a digest of them that keeps settings apart."""
        fields = json.dumps([getattr(self, name) for name in METADATA_FIELDS], default=str)
        digest = hashlib.sha256(fields.encode()).hexdigest()[:10]
        budget = f"patches{self.eps:g}" if self.norm == "patch" else f"eps{self.eps * 255:.4g}"
        readable = f"{self.model}_{self.method}_{budget}_{self.m_grad or 'plain'}_{self.precision}"
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', readable)[:80]}-{digest}"

    def metadata(self) -> dict[str, str]:
        from ellrobust.core.version import __version__

        out = {name: str(getattr(self, name)) for name in METADATA_FIELDS}
        out["eps"] = repr(float(self.eps))
        out["ellrobust_version"] = __version__
        return out


def save_adversarial(run_dir: Path, images: AdversarialSet) -> Path:
    """Write ``images`` to the run folder's ``adversarial/``, atomically; returns the file's path.

    The free space is checked first, so a full disk stops the run with one line before any byte is
    written (:class:`~ellrobust.core.errors.DiskFullError`), and nothing half-written is left behind.
    """
    from safetensors.numpy import save

    folder = Path(run_dir) / ADVERSARIAL_DIR
    arrays = {
        "index": np.ascontiguousarray(images.index, dtype=np.int64),
        "x_adv": np.ascontiguousarray(images.x_adv, dtype=np.float32),
        "label": np.ascontiguousarray(images.label, dtype=np.int64),
        "prediction": np.ascontiguousarray(images.prediction, dtype=np.int64),
    }
    needed = sum(a.nbytes for a in arrays.values()) + _HEADER_BYTES
    require_free_space(folder, needed, "adversarial images (--save-adversarial)")
    path = folder / f"{images.stem}.safetensors"
    atomic_write(path, save(arrays, metadata=images.metadata()))
    return path


CLEAN_FILE = "clean.safetensors"


def save_clean(run_dir: Path, index: np.ndarray, x: np.ndarray, label: np.ndarray) -> Path:
    """Write the selection's clean images once (``adversarial/clean.safetensors``); returns the path."""
    from safetensors.numpy import save

    folder = Path(run_dir) / ADVERSARIAL_DIR
    arrays = {
        "index": np.ascontiguousarray(index, dtype=np.int64),
        "x": np.ascontiguousarray(x, dtype=np.float32),
        "label": np.ascontiguousarray(label, dtype=np.int64),
    }
    needed = sum(a.nbytes for a in arrays.values()) + _HEADER_BYTES
    require_free_space(folder, needed, "clean images beside the adversarial images (--save-adversarial)")
    path = folder / CLEAN_FILE
    atomic_write(path, save(arrays))
    return path


def load_clean(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The clean images a run with ``--save-adversarial`` wrote (``index``, ``x``, ``label``), or None."""
    from safetensors.numpy import load_file

    path = Path(run_dir) / ADVERSARIAL_DIR / CLEAN_FILE
    if not path.is_file():
        return None
    with reading(path, "clean images of --save-adversarial"):
        arrays = load_file(str(path))
    missing = [name for name in ("index", "x", "label") if name not in arrays]
    if missing:
        raise DamagedFileError(f"{quote(path)} lacks {', '.join(missing)}: it was not written by --save-adversarial.")
    return arrays


def load_adversarial(path: Path) -> AdversarialSet:
    """A saved file, with its measurement read from the header; one-line error for a file that is not one."""
    from safetensors.numpy import load_file

    meta = _metadata(path)
    with reading(path, "adversarial-image file"):
        arrays = load_file(str(path))
    missing = [name for name in METADATA_FIELDS if name not in meta]
    missing += [name for name in ("index", "x_adv", "label", "prediction") if name not in arrays]
    if missing:
        raise DamagedFileError(f"{quote(path)} lacks {', '.join(missing)}: it was not written by --save-adversarial.")
    with reading(path, "adversarial-image file"):
        eps = float(meta["eps"])
    return AdversarialSet(
        model=meta["model"],
        method=meta["method"],
        params=meta["params"],
        eps=eps,
        m_grad=meta["m_grad"],
        precision=meta["precision"],
        norm=meta["norm"],
        index=arrays["index"],
        x_adv=arrays["x_adv"],
        label=arrays["label"],
        prediction=arrays["prediction"],
    )


def adversarial_files(run_dir: Path) -> list[Path]:
    """Every saved adversarial-image file of ``run_dir``, in name order (not the clean images' file)."""
    return [p for p in sorted((Path(run_dir) / ADVERSARIAL_DIR).glob("*.safetensors")) if p.name != CLEAN_FILE]


def find_adversarial(
    run_dir: Path, *, model: str, method: str, eps: float, m_grad: str = "", precision: str = "fp32"
) -> list[Path]:
    """The files of ``run_dir`` saved for this measurement (several when the attack ran with several settings)."""
    found = []
    for path in adversarial_files(run_dir):
        meta = _metadata(path)
        if (
            meta.get("model") == model
            and meta.get("method") == method
            and meta.get("m_grad") == m_grad
            and meta.get("precision") == precision
            and abs(_float(meta.get("eps", "nan")) - eps) < 1e-9
        ):
            found.append(path)
    return found


def _metadata(path: Path) -> dict[str, str]:
    """The header metadata of a saved file; one line naming the file when it is not a safetensors file."""
    from safetensors import safe_open

    with reading(path, "adversarial-image file"), safe_open(str(path), framework="numpy") as handle:
        return handle.metadata() or {}


def _float(text: str) -> float:
    """A header's number; NaN (matching nothing) where a hand-edited header holds none."""
    try:
        return float(text)
    except ValueError:
        return float("nan")
