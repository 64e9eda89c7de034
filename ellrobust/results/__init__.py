"""The results layer: typed rows and their key, per-example outcomes, the table on disk, older tables."""

from ellrobust.results.examples import EXAMPLE_COLUMNS, Outcomes, examples_frame, load_examples, save_examples
from ellrobust.results.migrate import complete_table, migrate_records
from ellrobust.results.rows import (
    ACCURACIES,
    COLLAPSE_METRICS,
    COLUMNS,
    EPS_STAR_PAIRED_METRICS,
    KEY_FIELDS,
    MEASUREMENT_FIELDS,
    METRICS,
    PAIRED_METRICS,
    Metric,
    Provenance,
    Row,
    row_key,
)
from ellrobust.results.schema import (
    REQUIRED_COLUMNS,
    SCHEMA_VERSION,
    load_results,
    records,
    run_schema,
    save_table,
    table,
    to_frame,
)

__all__ = [
    "ACCURACIES",
    "COLLAPSE_METRICS",
    "COLUMNS",
    "EXAMPLE_COLUMNS",
    "KEY_FIELDS",
    "MEASUREMENT_FIELDS",
    "METRICS",
    "EPS_STAR_PAIRED_METRICS",
    "PAIRED_METRICS",
    "REQUIRED_COLUMNS",
    "SCHEMA_VERSION",
    "Metric",
    "Outcomes",
    "Provenance",
    "Row",
    "complete_table",
    "examples_frame",
    "load_examples",
    "load_results",
    "migrate_records",
    "records",
    "row_key",
    "run_schema",
    "save_examples",
    "save_table",
    "table",
    "to_frame",
]
