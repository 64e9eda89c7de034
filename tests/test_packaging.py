"""Packaging: every subpackage is listed, the suites and shipped weights travel with the package."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ellrobust.suites import BUNDLED, bundled_suite, load_suite

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_subpackage():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ellrobust").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert config["package-dir"]["ellrobust.attack_suites"] == "attacks"


def test_bundled_suites_exist_and_parse():
    on_disk = {p.stem for p in (ROOT / "attacks").glob("*.toml")}
    assert set(BUNDLED) == on_disk
    for name in BUNDLED:
        assert bundled_suite(name) is not None
        suite = load_suite(name)
        assert suite.attacks and suite.description
