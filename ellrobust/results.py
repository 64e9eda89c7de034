"""The results schema (one long, typed table) and the run folder on disk.

One row per measured number. Metric names are a contract with users' CI scripts; accuracies are
fractions in [0, 1]. Floats stay floats: rounding happens only when rendering.

A run folder describes itself, so reports and checks can be rebuilt from disk alone::

    run/
      run.json           the request, environment and wall time
      units/<key>.json   one finished unit (rows + per-example outcomes), written atomically
      results.csv/.json  the assembled table
      examples.csv.gz    per-example outcomes (model, method, eps, severity, m_grad, index, correct)
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ellrobust.errors import DISK_ERRNOS, DISK_FIX, DiskFullError, UsageError, disk_error, format_bytes

SCHEMA_VERSION = 2

#: Columns every results table must have to be read back.
REQUIRED_COLUMNS = ("model", "dataset", "n", "method", "metric", "value")

#: Column → dtype. Rows may leave optional fields empty (NaN for floats, "" for strings).
COLUMNS: dict[str, str] = {
    "model": "string",
    "checkpoint": "string",
    "dataset": "string",
    "split": "string",
    "n": "Int64",
    "method": "string",
    "params": "string",
    "eps": "float64",
    "severity": "Int64",
    "layer": "Int64",
    "m_grad": "string",
    "precision": "string",
    "baseline": "string",
    "metric": "string",
    "value": "float64",
    "seed": "Int64",
    "ellrobust_version": "string",
    "torch_version": "string",
}

_ACCURACIES = ("clean_accuracy", "robust_accuracy", "corruption_accuracy")
_COLLAPSE = ("token_cosine", "attention_entropy", "effective_rank")

#: Metric names that users' scripts may rely on (README, "Results"), besides ``sanity_*``.
METRICS = (
    *_ACCURACIES,
    *(f"{m}_ci_{side}" for m in _ACCURACIES for side in ("low", "high")),  # 95 % Wilson intervals
    "n_attacked",
    "corruption_error",
    "ce",
    "mce",
    "relative_mce",
    "mce_difference",
    "mce_difference_ci_low",
    "mce_difference_ci_high",  # paired bootstrap over images
    *_COLLAPSE,
    *(f"{m}{part}" for m in _COLLAPSE for part in ("_ci_low", "_ci_high", "_difference", "_difference_ci_low", "_difference_ci_high")),
    "accuracy_difference",
    "difference_ci_low",
    "difference_ci_high",  # score interval for paired proportions (Tango)
    "mcnemar_p",
    "mcnemar_p_adjusted",  # Holm over every paired comparison of one pair of models in the run
    "detectable_difference",
    "n_required",
)


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows (flat dicts) → the typed results table, columns in schema order, extra columns kept last."""
    df = pd.DataFrame(list(rows))
    for col, dtype in COLUMNS.items():
        if col not in df:
            df[col] = pd.Series(float("nan") if dtype == "float64" else pd.NA, index=df.index, dtype="object")
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[list(COLUMNS) + extra]
    for col, dtype in COLUMNS.items():
        df[col] = df[col].astype(dtype)
    return df


def records(df: pd.DataFrame) -> list[dict]:
    """The table as flat JSON-ready objects (missing values → null, what ``--json`` prints)."""
    out = []
    for row in df.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                clean[k] = None
            elif hasattr(v, "item"):
                clean[k] = v.item()
            else:
                clean[k] = v
        out.append(clean)
    return out


def default_mode() -> int:
    """The permissions a plain ``open`` would give (mkstemp's 0600 would hide results from others)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see either the old or the new content, never half of it.

    A full disk, a disk quota or a read-only file system ends in a one-line
    :class:`~ellrobust.errors.DiskFullError` naming the folder and the file's size, and the temporary
    file is removed, so no partial file is ever left behind.
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise disk_error(exc, path, f"file {path.name!r}", len(payload)) from exc
        raise


def require_free_space(folder: Path, needed: int, what: str, fix: str = DISK_FIX) -> None:
    """Refuse at once, before large files are created in ``folder``, when its disk has less than ``needed`` bytes free.

    Large files (a memory-mapped image store, a cache of corrupted images) are checked before they
    are created: a run then stops in seconds with the size it needs, not hours later half-way.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise disk_error(exc, folder / ".", what, needed) from exc
        raise
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskFullError(f"the {what} need {format_bytes(needed)} in {str(folder)!r}, which has {format_bytes(free)} free; {fix}.")


def save_table(df: pd.DataFrame, run_dir: Path) -> None:
    """Write results.csv and results.json atomically."""
    atomic_write(run_dir / "results.csv", df.to_csv(index=False, lineterminator="\n"))
    atomic_write(run_dir / "results.json", json.dumps(records(df), indent=1, sort_keys=False) + "\n")


def load_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Read a run folder's results table (or a results CSV/JSON file)."""
    path = Path(run_dir)
    if path.is_dir():
        if not (path / "results.csv").is_file():
            raise UsageError(f"{str(path)!r} holds no results.csv; pass a run folder written by `ellrobust eval`.")
        path = path / "results.csv"
    if not path.is_file():
        raise UsageError(f"{str(path)!r} does not exist; pass a run folder written by `ellrobust eval`.")
    meta = path.parent / "run.json"
    if meta.is_file():
        version = json.loads(meta.read_text()).get("schema_version")
        if version != SCHEMA_VERSION:
            raise UsageError(
                f"{str(path.parent)!r} was written with results schema {version}, this ellrobust reads {SCHEMA_VERSION}; "
                "re-run the evaluation with this version."
            )
    try:
        raw = json.loads(path.read_text()) if path.suffix == ".json" else pd.read_csv(path).to_dict(orient="records")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UsageError(f"{str(path)!r} is not a readable results table ({type(exc).__name__}); re-run the evaluation.") from None
    missing = [c for c in REQUIRED_COLUMNS if not raw or c not in raw[0]]
    if missing:
        raise UsageError(f"{str(path)!r} lacks the columns {', '.join(missing)}: not written by this ellrobust version; re-run the evaluation.")
    return to_frame(raw)


class RunLock:
    """An exclusive lock on a run folder: two runs on the same ``--out`` would corrupt it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"--out {str(self.path.parent)!r} is (inside) a file; pass a folder.") from None
        except PermissionError:
            raise UsageError(f"--out {str(self.path.parent)!r} is not writable; pass a folder you can write to.") from None
        except OSError as exc:
            if exc.errno in DISK_ERRNOS:
                raise disk_error(exc, self.path, "run folder's lock file") from exc
            raise
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(
                    f"another ellrobust run is writing to {str(self.path.parent)!r}; wait for it or pass another --out."
                ) from None
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


