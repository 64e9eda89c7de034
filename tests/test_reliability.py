"""Interruption, concurrency, resource faults and determinism: nothing computed is lost, nothing is corrupted.

Runs are real subprocesses of the CLI, killed with SIGKILL at several points (after a given number
of finished units, and at arbitrary moments inside a unit), then restarted with the same command.
What long ImageNet runs meet is injected too: a pool worker killed (from outside, or by its own task,
once or every time), a worker whose setup fails, a full disk (monkeypatched writes, and a real tmpfs
when the tests run as root), free space too small for the image store or the cache. Every fault ends
in one line without a traceback, with its exit code, and the finished units survive.
"""

from __future__ import annotations

import errno
import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ellrobust.cli import app
from ellrobust.core import files as files_module
from ellrobust.core import worker_process
from ellrobust.core.errors import DiskFullError, UsageError, format_bytes
from ellrobust.core.files import atomic_write
from ellrobust.core.parsing import parse_name_list
from ellrobust.corruptions.cache import FILE_OVERHEAD
from ellrobust.corruptions.generate import GenerateTask

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
    proc = subprocess.Popen(
        cli(*ARGS, "--out", str(out)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not condition(out):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the kill point"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return _units(out)


@pytest.mark.parametrize(
    "after_units", [1, 6, pytest.param(0, marks=pytest.mark.slow), pytest.param(11, marks=pytest.mark.slow)]
)
def test_sigkill_after_n_units_then_resume_gives_the_same_table(tmp_path, reference, after_units):
    out = tmp_path / "run"
    saved = kill_when(out, lambda o: _units(o) >= after_units and (after_units > 0 or (o / ".lock").exists()))
    assert not (out / "results.csv").exists()
    assert not list(out.rglob("*.tmp")) or all(p.name.startswith(".") for p in out.rglob("*.tmp"))
    resumed = subprocess.run(cli(*ARGS, "--out", str(out)), env=ENV, capture_output=True, text=True, check=True)
    assert f"{saved} reused" in resumed.stderr
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert (out / "examples.csv.gz").read_bytes() == (reference / "examples.csv.gz").read_bytes()


@pytest.mark.parametrize(
    "delay", [2.5, pytest.param(0.7, marks=pytest.mark.slow), pytest.param(3.7, marks=pytest.mark.slow)]
)
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
    slow = [
        *ARGS,
        "--corruption",
        "all",
        "--severity",
        "2",
    ]  # long enough to still hold the lock when the second run starts
    first = subprocess.Popen(
        cli(*slow, "--out", str(out)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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


# --- resource faults -------------------------------------------------------------------------------

#: Two models on 24 ImageNet-sized images of a folder the tests build, six corruptions through 2 workers:
#: about 2 s of pool work after the first corruption unit, so a worker killed then has tasks in flight.
CORRUPTIONS = "gaussian_noise,shot_noise,defocus_blur,contrast,jpeg_compression,pixelate"


def image_args(root: Path) -> list[str]:
    return [
        "eval", "-m", "deit-nano", "-m", "deit-nano-elliptical", "--data", "imagefolder", "--data-root", str(root),
        "--attack", "none", "--corruption", CORRUPTIONS, "--severity", "1", "--workers", "2", "--batch-size", "8",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k in range(24):
        folder = root / f"n{k % 2:02d}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (240, 240, 3), dtype=np.uint8)).save(folder / f"img{k:02d}.JPEG")
    return root


@pytest.fixture(scope="module")
def image_reference(image_root, tmp_path_factory) -> Path:
    """The undisturbed run every disturbed one must reproduce, byte for byte."""
    out = tmp_path_factory.mktemp("image-ref") / "run"
    subprocess.run(
        cli(*image_args(image_root), "--out", str(out)), check=True, env=ENV, capture_output=True, timeout=300
    )
    return out


@pytest.fixture
def watchdog():
    """A test that would hang (a dead worker waited for) aborts the session with a traceback instead."""
    faulthandler.dump_traceback_later(240, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def one_error_line(result) -> str:
    """The single stderr line of a failed run (and no traceback anywhere)."""
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def children(pid: int) -> list[int]:
    return [int(c) for path in Path(f"/proc/{pid}/task").glob("*/children") for c in path.read_text().split()]


def saved_units(out: Path, stage: str = "") -> list[dict]:
    """The finished units on disk, each read back whole (a partial file would fail here)."""
    return [json.loads(path.read_text()) for path in sorted((out / "units").glob(f"{stage}*.json"))]


def no_partial_files(out: Path) -> bool:
    return not list(out.rglob("*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the pool's workers through /proc")
def test_a_worker_killed_from_outside_is_replaced_and_the_table_is_unchanged(tmp_path, image_root, image_reference):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        cli(*image_args(image_root), "--out", str(out)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list((out / "units").glob("corruption_*.json")):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the kill point"
    pool = children(proc.pid)
    assert len(pool) == 2, pool
    os.kill(pool[0], signal.SIGKILL)  # what the kernel's out-of-memory killer does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "warning: a worker process died (killed by SIGKILL" in stderr
    deaths = json.loads((out / "run.json").read_text())["worker_deaths"]
    assert [(d["pid"], d["exitcode"]) for d in deaths] == [(pool[0], -9)]
    assert (out / "results.csv").read_bytes() == (image_reference / "results.csv").read_bytes()
    assert (out / "examples.csv.gz").read_bytes() == (image_reference / "examples.csv.gz").read_bytes()


def _dying_tasks(monkeypatch, tmp_path: Path, once: bool) -> None:
    """Make every corruption task in a worker SIGKILL its own process: the first one only, or all of them."""
    parent, marker = os.getpid(), tmp_path / "killed-once"
    run = GenerateTask.__call__

    def dying(task):
        if os.getpid() != parent and (not once or _first(marker)):
            os.kill(os.getpid(), signal.SIGKILL)
        return run(task)

    monkeypatch.setattr(GenerateTask, "__call__", dying)


def _first(marker: Path) -> bool:
    """True in exactly one process, whichever creates ``marker`` first."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def test_the_tasks_of_a_dead_worker_are_run_again_by_a_fresh_one(
    runner, tmp_path, image_root, image_reference, monkeypatch, watchdog
):
    _dying_tasks(monkeypatch, tmp_path, once=True)
    out = tmp_path / "run"
    result = runner.invoke(app, [*image_args(image_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (death,) = json.loads((out / "run.json").read_text())["worker_deaths"]
    assert death["exitcode"] == -signal.SIGKILL and death["lost_tasks"] >= 1  # the dying task itself, at least
    assert (out / "results.csv").read_bytes() == (image_reference / "results.csv").read_bytes()


def test_a_worker_that_dies_again_stops_the_run_with_one_line_and_keeps_finished_units(
    runner, tmp_path, image_root, monkeypatch, watchdog
):
    _dying_tasks(monkeypatch, tmp_path, once=False)
    out = tmp_path / "run"
    result = runner.invoke(app, [*image_args(image_root), "--out", str(out)])
    assert result.exit_code == 3
    line = one_error_line(result)
    for fragment in (
        "died again: killed by SIGKILL",
        "out-of-memory killer",
        "while corrupting image '",
        "fewer --workers (this run has 2)",
        "--memory-budget",
    ):
        assert fragment in line, line
    assert len(saved_units(out, "clean_")) == 2 and not saved_units(out, "corruption_")
    assert not (out / "results.csv").exists() and no_partial_files(out)
    monkeypatch.undo()
    resumed = runner.invoke(app, [*image_args(image_root), "--out", str(out)])
    assert resumed.exit_code == 0 and "(6 units computed, 2 reused)" in resumed.stderr, resumed.output


def test_a_task_that_raises_in_a_worker_is_one_line_naming_the_image(
    runner, tmp_path, image_root, monkeypatch, watchdog
):
    def failing(task):
        raise MemoryError("cannot allocate 1.2 GiB")

    monkeypatch.setattr(GenerateTask, "__call__", failing)
    result = runner.invoke(app, [*image_args(image_root), "--out", str(tmp_path / "run")])
    assert result.exit_code == 3
    line = one_error_line(result)
    assert (
        f"corrupting image '{image_root}/n00/img00.JPEG' (gaussian_noise, severity 1) failed: "
        "MemoryError: cannot allocate 1.2 GiB" in line
    ), line


def test_a_worker_that_cannot_set_up_is_one_line_not_an_endless_respawn(
    runner, tmp_path, image_root, monkeypatch, watchdog
):
    def missing(cv2_inherited):
        raise ModuleNotFoundError("No module named 'threadpoolctl'")

    monkeypatch.setattr(worker_process, "init_worker", missing)
    result = runner.invoke(app, [*image_args(image_root), "--out", str(tmp_path / "run")])
    assert result.exit_code == 3
    line = one_error_line(result)
    assert (
        "could not set up (ModuleNotFoundError: No module named 'threadpoolctl')" in line and "--workers 0" in line
    ), line


class _FullDisk:
    """``os`` as ellrobust.core.files sees it, with ``fsync`` failing (ENOSPC) from the ``after``-th file on."""

    def __init__(self, after: int, code: int = errno.ENOSPC) -> None:
        self.calls, self.after, self.code = 0, after, code

    def fsync(self, fd: int) -> None:
        self.calls += 1
        if self.calls > self.after:
            raise OSError(self.code, os.strerror(self.code))
        os.fsync(fd)

    def __getattr__(self, name: str):
        return getattr(os, name)


SMALL = [
    "eval",
    "-m",
    "deit-nano",
    "-m",
    "deit-nano-elliptical",
    "--data",
    "synthetic",
    "-n",
    "16",
    "--batch-size",
    "8",
    "--attack",
    "fgsm",
    "--eps",
    "2/255,4/255",
]


def test_a_full_disk_while_saving_units_is_one_line_and_the_run_resumes(runner, tmp_path, monkeypatch):
    monkeypatch.setattr(files_module, "os", _FullDisk(after=2))
    out = tmp_path / "run"
    result = runner.invoke(app, [*SMALL, "--out", str(out)])
    assert result.exit_code == 3
    line = one_error_line(result)
    assert (
        f"in '{out}/units' (about " in line and "B needed): no space left on the device" in line and "--out" in line
    ), line
    assert len(saved_units(out)) == 2 and no_partial_files(out)
    monkeypatch.undo()
    resumed = runner.invoke(app, [*SMALL, "--out", str(out)])
    assert resumed.exit_code == 0 and "2 reused" in resumed.stderr, resumed.output


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "no space left on the device; free space there"),
     (errno.EDQUOT, "the disk quota is exceeded; free space there"),
     (errno.EROFS, "the file system is read-only; pass --out")],
)  # fmt: skip
def test_atomic_write_refusals_name_the_folder_and_the_size_and_leave_nothing(tmp_path, monkeypatch, code, reason):
    monkeypatch.setattr(files_module, "os", _FullDisk(after=0, code=code))
    with pytest.raises(DiskFullError, match=rf"'results.csv' in '{tmp_path}' \(about 1.5 KiB needed\): {reason}"):
        atomic_write(tmp_path / "results.csv", "x" * 1536)
    assert list(tmp_path.iterdir()) == []


def _free(limit_of: dict[str, int]):
    """``shutil.disk_usage`` reporting ``limit_of[folder name]`` bytes free (plenty elsewhere)."""
    real = shutil.disk_usage

    def usage(path):
        total, used, free = real(path)
        return type(real(path))(total, used, limit_of.get(Path(path).name, free))

    return usage


def test_the_store_file_is_refused_at_once_when_its_disk_is_too_small(runner, tmp_path, image_root, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", _free({"run": 1024}))
    out = tmp_path / "run"
    result = runner.invoke(app, [*image_args(image_root), "--memory-budget", "0", "--out", str(out)])
    assert result.exit_code == 3
    line = one_error_line(result)
    needed = format_bytes(24 * 3 * 224 * 224)  # 24 uint8 images of 224 px
    assert f"the decoded images need {needed} in '{out}', which has 1.0 KiB free" in line and "--cache" in line, line
    assert not list(out.glob("images-*")) and not (out / "units").exists()


def test_the_corruption_cache_is_refused_before_generation_when_its_disk_is_too_small(
    runner, tmp_path, image_root, monkeypatch
):
    monkeypatch.setattr(
        shutil, "disk_usage", _free({"cache": 1024})
    )  # the store (cache/images) fits, the batches do not
    out, cache = tmp_path / "run", tmp_path / "cache"
    result = runner.invoke(app, [*image_args(image_root), "--cache", str(cache), "--out", str(out)])
    assert result.exit_code == 3
    line = one_error_line(result)
    needed = format_bytes(
        6 * 24 * (3 * 224 * 224 + 8) + 6 * 3 * FILE_OVERHEAD
    )  # 6 units of 3 batch files, 24 images + labels each
    assert f"the corrupted images to cache need {needed} in '{cache}', which has 1.0 KiB free" in line, line
    assert len(saved_units(out, "clean_")) == 2 and not saved_units(out, "corruption_")
    assert not [p for p in cache.rglob("*.npz")]


def test_a_disk_error_no_writer_expected_is_still_one_line(runner, tmp_path, monkeypatch):
    """The CLI's safety net: an ENOSPC from a write outside the known writers gets the same line and exit code."""
    from ellrobust.report import writer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "rep" / "report.md"))

    run = tmp_path / "run"
    assert (
        runner.invoke(
            app, ["eval", "-m", "deit-nano", "--data", "synthetic", "-n", "8", "--attack", "none", "--out", str(run)]
        ).exit_code
        == 0
    )
    monkeypatch.setattr(writer, "render", full)
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 3
    assert f"cannot write the file 'report.md' in '{tmp_path}/rep': no space left on the device" in one_error_line(
        result
    )


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 40 KiB tmpfs (root only): room for some unit files of the run below, not for all."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_real_full_disk_is_one_line_keeps_finished_units_and_resumes(tmp_path, small_tmpfs):
    args = ["eval", "-m", "deit-nano", "-m", "deit-nano-elliptical", "--data", "synthetic", "-n", "32",
            "--batch-size", "32", "--attack", "none", "--corruption", "fog", "--severity", "1", "--collapse",
            "--out", str(small_tmpfs / "run")]  # fmt: skip
    full = subprocess.run(cli(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert full.returncode == 3, full.stderr
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert f"in '{small_tmpfs}/run" in lines[0] and "no space left on the device" in lines[0], lines[0]
    saved = saved_units(small_tmpfs / "run")
    assert 1 <= len(saved) < 5 and no_partial_files(small_tmpfs / "run")
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_tmpfs)], check=True)
    resumed = subprocess.run(cli(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"{len(saved)} reused" in resumed.stderr, resumed.stderr
