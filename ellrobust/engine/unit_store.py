"""Finished units on disk: one JSON file per unit, written atomically, reused only when whole."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from ellrobust.core.files import atomic_write
from ellrobust.core.readback import DamagedFileError, read_json
from ellrobust.results import ImageTable, Row
from ellrobust.results.adversarial_images import ADVERSARIAL_DIR, CLEAN_FILE
from ellrobust.run.units import Unit, UnitResult


class UnitStore:
    """Finished units on disk, one JSON file each, written atomically.

    A unit is reused only when its file reads back whole and every file it names (its adversarial
    images) is there with the size it had when the unit was saved; anything else is recomputed, so a
    damaged run folder mends itself with the same command.
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "units"

    def path(self, key: str, unit: Unit) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{unit.stage}_{unit.model}_{unit.method}")[:60]
        return self.dir / f"{slug}-{key[:16]}.json"

    def load(self, key: str, unit: Unit) -> UnitResult | None:
        path = self.path(key, unit)
        if not path.is_file():
            return None
        try:
            data = read_json(path, "unit file")
        except DamagedFileError:
            return None  # a damaged unit file is simply recomputed
        if data.get("key") != key:
            return None
        try:
            result = self._result(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a unit file this version cannot read is recomputed too
        return result if self._files_intact(result.extra) else None

    def _files_intact(self, extra: dict) -> bool:
        """Whether every file the unit names is on disk with its recorded size."""
        sizes = extra.get("file_sizes", {})
        for name in unit_files(extra):
            path = self.dir.parent / name
            if not path.is_file() or (name in sizes and path.stat().st_size != sizes[name]):
                return False
        return True

    @staticmethod
    def _result(data: dict) -> UnitResult:
        """A unit file's content as a result (raises on a missing field, one of the wrong type, or a
        per-image column this run has not declared)."""
        if not isinstance(data["extra"], dict):
            raise TypeError("extra is not an object")
        return UnitResult(
            rows=[Row(**r) for r in data["rows"]],
            per_image=ImageTable.from_json(data["per_image"]),
            extra=data["extra"],
        )

    def save(self, key: str, unit: Unit, result: UnitResult) -> None:
        names = unit_files(result.extra)
        if names:  # what resuming checks before it reuses the unit
            result.extra["file_sizes"] = {name: (self.dir.parent / name).stat().st_size for name in names}
        payload = {
            "key": key,
            "unit": asdict(unit),
            "rows": [row.as_dict() for row in result.rows],
            "per_image": result.per_image.to_json(),
            "extra": result.extra,
        }
        atomic_write(self.path(key, unit), json.dumps(payload, sort_keys=True) + "\n")


def unit_files(extra: dict) -> list[str]:
    """The files (relative to the run folder) a unit's results rely on: its adversarial images and the clean ones."""
    name = extra.get("adversarial_file")
    return [name, f"{ADVERSARIAL_DIR}/{CLEAN_FILE}"] if isinstance(name, str) else []
