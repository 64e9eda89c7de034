"""The per-image table a unit yields: per model, declared column → one value per image.

A measure that keeps something per image declares the column once, with :func:`declare_column`
(its name, dtype and a one-line meaning), in the module that produces it. A unit's
:class:`ImageTable` then holds the column under the model it describes, the unit file stores it
(:meth:`ImageTable.to_json`, a loop over the columns) and, when it is declared ``example=True``,
``examples.csv.gz`` carries it (:func:`~ellrobust.results.per_image.examples_frame`). A new column
needs no new field in the unit result, no branch in the unit store and no argument to
:class:`~ellrobust.results.per_image.Outcomes`.

Most entries describe the unit's own measurement (view :data:`OWN`). A unit can also measure other
models in a measurement of their own, kept as another view under each such model:
:data:`TRANSFERRED` holds another model judging this unit's adversarial images
(:func:`~ellrobust.run.units.transfer_params` names that measurement).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

#: The view of a unit's own measurement.
OWN = "own"
#: The view of the other models judging a unit's adversarial images (``--transfer``).
TRANSFERRED = "transferred"
#: Separates a family's name from a member's key (``token_cosine|3|``).
FAMILY_SEPARATOR = "|"


@dataclass(frozen=True)
class Column:
    """One declared per-image column.

    Attributes:
        name: the column's name (a family's prefix when ``family``).
        dtype: ``bool``, ``int64`` or ``float64``; a float column may hold NaN (not measured).
        meaning: a line for readers of unit files and ``examples.csv.gz``.
        example: whether ``examples.csv.gz`` has the column (empty where a measurement lacks it).
        family: whether the name is a prefix: ``<name>|<key>`` are its members (one per layer...).
    """

    name: str
    dtype: np.dtype
    meaning: str
    example: bool = False
    family: bool = False


_DECLARED: dict[str, Column] = {}


def declare_column(name: str, dtype: type, meaning: str, *, example: bool = False, family: bool = False) -> Column:
    """Declare a per-image column; declaring it again identically is a no-op (a module imported twice).

    Raises:
        ValueError: the name holds the family separator, the dtype is not bool, int64 or float64,
            or the name is already declared differently.
    """
    declared = Column(name, np.dtype(dtype), meaning, example, family)
    if FAMILY_SEPARATOR in name:
        raise ValueError(f"per-image column {name!r}: {FAMILY_SEPARATOR!r} separates a family's members")
    if declared.dtype not in (np.dtype(bool), np.dtype(np.int64), np.dtype(np.float64)):
        raise ValueError(f"per-image column {name!r}: dtype {declared.dtype} is not bool, int64 or float64")
    if _DECLARED.get(name, declared) != declared:
        raise ValueError(f"per-image column {name!r} is declared twice, differently")
    _DECLARED[name] = declared
    return declared


def column(name: str) -> Column:
    """The declaration of ``name`` (a family member ``<family>|<key>`` has its family's).

    Raises:
        ValueError: no such column is declared.
    """
    family, separator, _ = name.partition(FAMILY_SEPARATOR)
    found = _DECLARED.get(family)
    if found is None or bool(separator) != found.family:
        raise ValueError(f"per-image column {name!r} is not declared (declare it with declare_column)")
    return found


def declared_columns() -> tuple[Column, ...]:
    """Every declared column, in the order of declaration."""
    return tuple(_DECLARED.values())


def family_values(columns: Mapping[str, np.ndarray], family: str) -> np.ndarray | None:
    """The members of a family keyed by slot (``<family>|0``, ``<family>|1``…) in ``columns``, as one
    (images, members) array in slot order; None when ``columns`` has no member."""
    prefix = family + FAMILY_SEPARATOR
    slots = sorted(int(name[len(prefix) :]) for name in columns if name.startswith(prefix))
    return np.stack([columns[f"{prefix}{slot}"] for slot in slots], axis=1) if slots else None


class ImageTable:
    """One unit's per-image values: per view and model, declared column → read-only array.

    Columns of one model and view have one value per image each. The arrays are read-only, so a
    unit that starts from another unit's columns (nested budgets) copies them before it changes them.
    """

    def __init__(self) -> None:
        self._views: dict[str, dict[str, dict[str, np.ndarray]]] = {}

    @classmethod
    def of(cls, model: str, columns: Mapping[str, Iterable]) -> ImageTable:
        """A table holding ``columns`` of ``model`` in the unit's own measurement."""
        table = cls()
        table.put(model, columns)
        return table

    def put(self, model: str, columns: Mapping[str, Iterable], view: str = OWN) -> None:
        """Add (or replace) columns of ``model`` in ``view``; None in a float column becomes NaN.

        Raises:
            ValueError: a column is not declared, or its length differs from the entry's other columns.
        """
        entry = dict(self._views.get(view, {}).get(model, {}))
        for name, values in columns.items():
            array = np.array(values, dtype=column(name).dtype)
            size = len(next(iter(entry.values()))) if entry else array.size
            if array.ndim != 1 or array.size != size:
                raise ValueError(f"per-image column {name!r} of {model} has {array.size} values for {size} images")
            array.flags.writeable = False
            entry[name] = array
        self._views.setdefault(view, {})[model] = entry  # only once every column is checked

    def views(self) -> list[str]:
        """The views the table has entries in."""
        return list(self._views)

    def models(self, view: str = OWN) -> list[str]:
        """The models with columns in ``view``, in the order they were added (sorted, when read from a file)."""
        return list(self._views.get(view, {}))

    def entry(self, model: str, view: str = OWN) -> dict[str, np.ndarray]:
        """The columns of ``model`` in ``view`` (empty when it has none)."""
        return dict(self._views.get(view, {}).get(model, {}))

    def get(self, model: str, name: str, view: str = OWN) -> np.ndarray | None:
        """One column of ``model`` in ``view``, or None."""
        return self._views.get(view, {}).get(model, {}).get(name)

    def column(self, model: str, name: str, view: str = OWN) -> np.ndarray:
        """One column of ``model`` in ``view``.

        Raises:
            KeyError: the table has no such column.
        """
        found = self.get(model, name, view)
        if found is None:
            raise KeyError(f"no per-image column {name!r} of {model} ({view})")
        return found

    def to_json(self) -> dict[str, dict[str, dict[str, object]]]:
        """The table as JSON: 0/1 columns as strings of digits (a unit file stays small and readable),
        float columns with null for NaN."""
        return {
            view: {model: {name: _encode(values) for name, values in entry.items()} for model, entry in models.items()}
            for view, models in self._views.items()
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, Mapping[str, object]]]) -> ImageTable:
        """A table from :meth:`to_json` (raises ValueError, TypeError or AttributeError on a malformed one)."""
        table = cls()
        for view, models in data.items():
            for model, entry in models.items():
                table.put(model, {name: _decode(values) for name, values in entry.items()}, view)
        return table


def _encode(values: np.ndarray) -> object:
    if values.dtype == bool:
        return "".join("1" if v else "0" for v in values.tolist())
    if values.dtype.kind == "f":
        return [None if np.isnan(v) else v for v in values.tolist()]
    return values.tolist()


def _decode(values: object) -> object:
    if isinstance(values, str):
        return [int(c) for c in values]
    if not isinstance(values, list):
        raise TypeError("a per-image column is a list or a string of digits")
    return values
