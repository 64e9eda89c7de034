"""The results table on disk: typed columns, saving, loading, JSON records.

A run folder describes itself, so reports and checks can be rebuilt from disk alone::

    run/
      run.json           the request, the models, the environment, how the attention ran, timings
      units/<key>.json   one finished unit (rows + per-example outcomes), written atomically
      results.csv/.json  the assembled table (schema :data:`SCHEMA_VERSION`)
      examples.csv.gz    per-example outcomes (:mod:`ellrobust.results.per_image`)

A run folder of another schema is refused with one line (:func:`check_schema`), never converted:
there are no migrations before 1.0, and the same command recomputes the folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from ellrobust.core.errors import UsageError, quote
from ellrobust.core.files import atomic_write
from ellrobust.core.readback import RECOMPUTE, DamagedFileError, read_json, reading
from ellrobust.core.version import __version__
from ellrobust.results.rows import COLUMNS, Provenance, Row

#: The shape of results tables, run folders and CI baselines; files of any other version are refused.
SCHEMA_VERSION = 4

#: Columns every results table must have to be read back.
REQUIRED_COLUMNS = ("model", "dataset", "n", "method", "metric", "value")


def to_frame(rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """Flat records → the typed results table, columns in schema order, extra columns kept last."""
    df = pd.DataFrame(list(rows))
    for col, dtype in COLUMNS.items():
        if col not in df:
            df[col] = pd.Series(float("nan") if dtype == "float64" else pd.NA, index=df.index, dtype="object")
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[list(COLUMNS) + extra]
    for col, dtype in COLUMNS.items():
        df[col] = df[col].astype(dtype)
    return df


def table(rows: Iterable[Row], provenance: Mapping[str, Provenance]) -> pd.DataFrame:
    """The results table of typed rows, each with its model's provenance (``provenance[row.model]``)."""
    return to_frame({**_provenance(provenance[row.model]), **row.as_dict()} for row in rows)


def _provenance(p: Provenance) -> dict[str, object]:
    return {name: getattr(p, name) for name in p.__dataclass_fields__}


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


def save_table(df: pd.DataFrame, run_dir: Path) -> None:
    """Write results.csv and results.json atomically."""
    atomic_write(run_dir / "results.csv", df.to_csv(index=False, lineterminator="\n"))
    atomic_write(run_dir / "results.json", json.dumps(records(df), indent=1, sort_keys=False) + "\n")


def check_schema(what: str, version: object, written_by: object, fix: str) -> None:
    """Refuse a file of another results schema in one line: which version wrote it, which this one reads.

    Args:
        what: the file or folder, as the message names it.
        version: the schema version it records (None: it records none).
        written_by: the ellrobust version that wrote it (None: unknown).
        fix: what to do instead, e.g. ``recompute it with the same command``.

    Raises:
        UsageError: ``version`` is not :data:`SCHEMA_VERSION`.
    """
    if version == SCHEMA_VERSION:
        return
    writer = f"ellrobust {written_by}" if written_by else "an unknown ellrobust"
    schema = f"results schema {version}" if version is not None else "no results schema"
    raise UsageError(
        f"{what} was written by {writer} ({schema}); ellrobust {__version__} reads schema {SCHEMA_VERSION} only: {fix}."
    )


def _check_run_folder(folder: Path) -> None:
    """Refuse a run folder whose run.json records another schema (a results file without run.json is read)."""
    if not (folder / "run.json").is_file():
        return
    meta = read_run_json(folder)
    written_by = (meta.get("environment") or {}).get("ellrobust")
    check_schema(str(folder), meta.get("schema_version"), written_by, RECOMPUTE)


def read_run_json(run_dir: str | os.PathLike) -> dict:
    """A run folder's run.json (``{}`` without one); one line naming the file when it is damaged."""
    meta = Path(run_dir) / "run.json"
    return read_json(meta, "run description") if meta.is_file() else {}


def load_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Read a run folder's results table (or a results CSV/JSON file) of this schema."""
    path = Path(run_dir)
    if path.is_dir():
        if not (path / "results.csv").is_file():
            raise UsageError(f"{str(path)!r} holds no results.csv; pass a run folder written by `ellrobust eval`.")
        path = path / "results.csv"
    if not path.is_file():
        raise UsageError(f"{str(path)!r} does not exist; pass a run folder written by `ellrobust eval`.")
    _check_run_folder(path.parent)
    if path.suffix == ".json":
        raw = read_json(path, "results table", kind=list)
    else:
        with reading(path, "results table"):
            if not path.read_bytes().endswith(b"\n"):  # ellrobust ends every line: a file cut short mid-row
                raise EOFError("cut short: no newline at its end")
            raw = pd.read_csv(path).to_dict(orient="records")
    missing = [c for c in REQUIRED_COLUMNS if not raw or not isinstance(raw[0], dict) or c not in raw[0]]
    if missing:
        raise DamagedFileError(
            f"the results table {quote(path)} lacks the columns {', '.join(missing)}: not an ellrobust results table; "
            f"{RECOMPUTE}."
        )
    with reading(path, "results table"):
        return to_frame(raw)
