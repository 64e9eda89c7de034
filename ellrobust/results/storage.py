"""The results table on disk: typed columns, saving, loading (through the one migration), JSON records.

A run folder describes itself, so reports and checks can be rebuilt from disk alone::

    run/
      run.json           the request, the models, the environment, how the attention ran, timings
      units/<key>.json   one finished unit (rows + per-example outcomes), written atomically
      results.csv/.json  the assembled table (schema :data:`SCHEMA_VERSION`)
      examples.csv.gz    per-example outcomes (:mod:`ellrobust.results.per_image`)

Tables of older versions are read through :mod:`ellrobust.results.migrate`; nothing else looks at a
version.
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
from ellrobust.results.migrate import complete_table, migrate_records
from ellrobust.results.rows import COLUMNS, Provenance, Row

#: 3 (ellrobust 0.3): every accuracy row has its Wilson interval and every paired comparison its
#: Holm-adjusted p; 2 (0.2): a ``precision`` column, intervals and paired rows as they were added;
#: 1 (0.1): no ``precision``.
SCHEMA_VERSION = 3

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


def run_schema(run_dir: Path) -> int | None:
    """The schema version a run folder's run.json records (None without run.json)."""
    version = read_run_json(run_dir).get("schema_version")
    if version is not None and not isinstance(version, int):
        meta = Path(run_dir) / "run.json"
        raise DamagedFileError(f"the run description {quote(meta)} gives no integer schema_version; {RECOMPUTE}.")
    return version


def read_run_json(run_dir: str | os.PathLike) -> dict:
    """A run folder's run.json (``{}`` without one); one line naming the file when it is damaged."""
    meta = Path(run_dir) / "run.json"
    return read_json(meta, "run description") if meta.is_file() else {}


def load_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Read a run folder's results table (or a results CSV/JSON file), in the current schema."""
    path = Path(run_dir)
    if path.is_dir():
        if not (path / "results.csv").is_file():
            raise UsageError(f"{str(path)!r} holds no results.csv; pass a run folder written by `ellrobust eval`.")
        path = path / "results.csv"
    if not path.is_file():
        raise UsageError(f"{str(path)!r} does not exist; pass a run folder written by `ellrobust eval`.")
    version = run_schema(path.parent)
    if version is not None and version > SCHEMA_VERSION:
        raise UsageError(
            f"{str(path.parent)!r} was written with results schema {version}, "
            f"newer than this ellrobust's {SCHEMA_VERSION}; "
            "read it with a newer ellrobust."
        )
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
        return complete_table(to_frame(migrate_records(raw)))
