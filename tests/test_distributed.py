"""torchrun on the CPU (gloo): a 2-process run gives the 1-process table; DDP training learns.

These start real process groups on the loopback interface, so they take some seconds each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EVAL = [
    "eval", "--data", "synthetic", "-m", "deit-nano", "-m", "deit-nano-elliptical", "-n", "40", "--batch-size", "8",
    "--attack", "fgsm,pgd", "--steps", "2", "--eps", "2/255,8/255", "--corruption", "contrast,gaussian_noise",
    "--severity", "1,3", "--collapse",
]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "ellrobust",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def single(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ellrobust", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )


def test_two_process_eval_equals_one_process(tmp_path):
    one = single(*EVAL, "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = torchrun(2, *EVAL, "--out", "two", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert (tmp_path / "one" / "results.csv").read_bytes() == (tmp_path / "two" / "results.csv").read_bytes()
    assert (tmp_path / "one" / "examples.csv.gz").read_bytes() == (tmp_path / "two" / "examples.csv.gz").read_bytes()
    metrics = set(pd.read_csv(tmp_path / "two" / "results.csv").metric)  # the identical table holds every statistic
    assert {
        "token_cosine_ci_low",
        "token_cosine_difference_ci_high",
        "mce_difference_ci_low",
        "mcnemar_p_adjusted",
    } <= metrics
    assert two.stderr.count("results:") == 1  # rank 0 alone reports
    # resuming under torchrun: every rank agrees that all units are done
    again = torchrun(2, *EVAL, "--out", "two", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 units computed" in again.stderr


def test_two_process_training_learns_and_rank0_writes(tmp_path):
    out = tmp_path / "ckpt" / "nano.safetensors"
    run = torchrun(
        2,
        "train",
        "-m",
        "deit-nano",
        "--data",
        "synthetic",
        "--epochs",
        "15",
        "--warmup-epochs",
        "1",
        "--lr",
        "1e-2",
        "--batch-size",
        "16",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("wrote") == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["nano.safetensors"]
    first, last = (float(x) for x in run.stdout.split("loss ")[1].split(",")[0].split(" → "))
    assert last < first - 0.1


@pytest.mark.slow
def test_two_process_collapse_matches_one_process(tmp_path):
    args = ["collapse", "--data", "synthetic", "-m", "deit-nano-elliptical", "-n", "40", "--batch-size", "8"]
    one = single(*args, "--out", "one", cwd=tmp_path)
    two = torchrun(2, *args, "--out", "two", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert (tmp_path / "one" / "results.csv").read_bytes() == (tmp_path / "two" / "results.csv").read_bytes()


@pytest.mark.slow
def test_two_process_eval_of_other_libraries_models_matches_one_process(tmp_path):
    """timm and torchvision baselines shard like ellrobust's models: same table, same run.json models."""
    args = [
        "eval", "--data", "synthetic", "-m", "timm:test_vit", "-m", "torchvision:resnet18",
        "-m", "deit-nano-elliptical", "--img-size", "32",
 "-n", "24", "--batch-size", "8", "--attack", "fgsm", "--eps", "4/255", "--collapse",
    ]  # fmt: skip
    one = single(*args, "--out", "one", cwd=tmp_path)
    two = torchrun(2, *args, "--out", "two", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert (tmp_path / "one" / "results.csv").read_bytes() == (tmp_path / "two" / "results.csv").read_bytes()
    models = [json.loads((tmp_path / run / "run.json").read_text())["models"] for run in ("one", "two")]
    assert models[0] == models[1] and models[0]["timm:test_vit"]["config"]["library"] == "timm"
