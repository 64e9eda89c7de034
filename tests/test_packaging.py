"""Packaging: every subpackage is listed, the suites and shipped weights travel with the package."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ellrobust.request.suites import BUNDLED, bundled_suite, load_suite

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_subpackage():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    # every folder of modules, with or without an __init__.py: setuptools ships only the listed ones
    folders = {p.parent for p in (ROOT / "ellrobust").rglob("*.py") if "__pycache__" not in p.parts}
    faceless = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert not faceless, f"give {faceless} an __init__.py (a namespace package is neither listed nor shipped)"
    found = {".".join(f.relative_to(ROOT).parts) for f in folders}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    mapped = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    stale = sorted(name for name in listed - found if not mapped.get(name, ROOT / "-").is_dir())
    assert not stale, f"[tool.setuptools] packages lists {stale}, which are no folders of the repository"
    assert config["package-dir"]["ellrobust.attack_suites"] == "attacks"


def test_bundled_suites_exist_and_parse():
    on_disk = {p.stem for p in (ROOT / "attacks").glob("*.toml")}
    assert set(BUNDLED) == on_disk
    for name in BUNDLED:
        assert bundled_suite(name) is not None
        suite = load_suite(name)
        assert suite.attacks and suite.description
