"""A tiny, typed registry used for every pluggable family (models, datasets, attacks, ...).

Why a registry and not an if/elif chain: the CLI listings, the error messages with suggestions and
the parametrised tests all iterate over the same table, so adding a member is one entry in its
family's table (``attacks/registry.py``, ``data/registry.py``, ...) and everything else follows.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from ellrobust.core.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name → entry mapping; duplicate names raise, unknown names suggest close matches."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a second registration of the same name is a bug."""
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name: {name!r}")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """Look ``name`` up, or raise a :class:`UsageError` naming the closest choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(unknown_choice(self.kind, name, list(self._entries))) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def unknown_choice(kind: str, name: str, choices: list[str]) -> str:
    """One-line message for an unknown name: the closest matches first, then every choice."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Choices: {', '.join(choices)}."
