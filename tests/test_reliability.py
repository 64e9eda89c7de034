"""Interruption, concurrency and determinism: nothing computed is lost, nothing is corrupted.

Runs are real subprocesses of the CLI, killed with SIGKILL at several points (after a given number
of finished units, and at arbitrary moments inside a unit), then restarted with the same command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ellrobust.errors import UsageError
from ellrobust.parsing import parse_name_list

ARGS = [
    "eval", "-m", "deit", "-m", "deit-elliptical", "-n", "32", "--batch-size", "8",
    "--attack", "fgsm,pgd", "--eps", "1/255,2/255,4/255,8/255", "--steps", "4",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ellrobust", *args]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(cli(*ARGS, "--out", str(out)), check=True, env=ENV, capture_output=True)
    return out


def _units(out: Path) -> int:
    return len(list((out / "units").glob("*.json"))) if (out / "units").is_dir() else 0


def kill_when(out: Path, condition, timeout: float = 120.0) -> int:
    """Start the run, SIGKILL it once ``condition(out)`` holds; returns the units saved by then."""
    proc = subprocess.Popen(cli(*ARGS, "--out", str(out)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not condition(out):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the kill point"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return _units(out)


@pytest.mark.parametrize("after_units", [1, 6, pytest.param(0, marks=pytest.mark.slow), pytest.param(11, marks=pytest.mark.slow)])
def test_sigkill_after_n_units_then_resume_gives_the_same_table(tmp_path, reference, after_units):
    out = tmp_path / "run"
    saved = kill_when(out, lambda o: _units(o) >= after_units and (after_units > 0 or (o / ".lock").exists()))
    assert not (out / "results.csv").exists()
    assert not list(out.rglob("*.tmp")) or all(p.name.startswith(".") for p in out.rglob("*.tmp"))
    resumed = subprocess.run(cli(*ARGS, "--out", str(out)), env=ENV, capture_output=True, text=True, check=True)
    assert f"{saved} reused" in resumed.stderr
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert (out / "examples.csv.gz").read_bytes() == (reference / "examples.csv.gz").read_bytes()


@pytest.mark.parametrize("delay", [2.5, pytest.param(0.7, marks=pytest.mark.slow), pytest.param(3.7, marks=pytest.mark.slow)])
def test_sigkill_at_arbitrary_moments_then_resume(tmp_path, reference, delay):
    out = tmp_path / "run"
    start = time.time()
    kill_when(out, lambda o: time.time() - start > delay and _units(o) >= 1)
    subprocess.run(cli(*ARGS, "--out", str(out)), env=ENV, capture_output=True, check=True)
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_damaged_unit_file_is_recomputed(tmp_path, reference):
    out = tmp_path / "run"
    subprocess.run(cli(*ARGS, "--out", str(out)), env=ENV, capture_output=True, check=True)
    victim = sorted((out / "units").glob("*.json"))[3]
    victim.write_text('{"key": "trunc')
    again = subprocess.run(cli(*ARGS, "--out", str(out)), env=ENV, capture_output=True, text=True, check=True)
    assert "1 units computed" in again.stderr
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_second_run_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "run"
    slow = [*ARGS, "--corruption", "all", "--severity", "2"]  # long enough to still hold the lock when the second run starts
    first = subprocess.Popen(cli(*slow, "--out", str(out)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / ".lock").exists():
            time.sleep(0.01)
        second = subprocess.run(cli(*slow, "--out", str(out)), env=ENV, capture_output=True, text=True)
        assert first.poll() is None, "the first run ended too early for the test"
        assert second.returncode == 2
        assert "another ellrobust run is writing" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    assert (out / "results.csv").is_file()


@given(st.text(max_size=30))
def test_name_list_parser_fuzz_only_raises_usage_errors(text):
    try:
        names = parse_name_list(text, "--attack")
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert names and all(n and n == n.strip() and "," not in n for n in names)
