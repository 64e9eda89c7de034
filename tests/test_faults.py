"""Faults a hostile user meets (issue 30): damaged files, resumes that trust the disk, bounds, paths, SIGTERM.

Each class of fault ends in one line (``error: …``, naming the file or the input and the fix) or is
mended by running the same command again; never in a traceback or a bare ``Aborted.``. One small run
folder (two shipped digits models, FGSM at two budgets, ``--save-adversarial``) is made once and
copied for every case that damages it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ellrobust.attacks.bisection import bisect
from ellrobust.cli import app
from ellrobust.core.errors import quote
from ellrobust.core.readback import DamagedFileError
from ellrobust.data.image_store import open_complete
from ellrobust.results import load_examples
from ellrobust.results.adversarial_images import adversarial_files, load_adversarial, load_clean
from ellrobust.results.ood_scores import load_scores

EVAL = [
    "eval", "-m", "deit", "-m", "deit-elliptical", "-n", "16", "--batch-size", "8", "--attack", "fgsm",
    "--eps", "1/255,2/255", "--save-adversarial", "--no-sanity", "--json",
]  # fmt: skip

#: Damage done to a file's bytes: cut at several offsets, replaced by garbage, emptied, the wrong JSON type.
DAMAGES = {
    "truncated-1": lambda b: b[:1],
    "truncated-half": lambda b: b[: len(b) // 2],
    "truncated-end": lambda b: b[: len(b) - 3],
    "garbage": lambda b: bytes(range(255, 0, -1)) * 3,
    "empty": lambda b: b"",
    "wrong-type": lambda b: b"null\n",
}


def ok(result) -> None:
    """No traceback: the command ended by itself (exit code), not by an exception that escaped."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output, result.output


def one_error_line(result, *names: str) -> str:
    """The single ``error:`` line of a failed command, naming each of ``names``."""
    ok(result)
    assert result.exit_code not in (0, 1), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("finished") / "run"
    runner = CliRunner()
    assert runner.invoke(app, [*EVAL, "--out", str(out)]).exit_code == 0
    baseline = out.parent / "baseline.json"
    assert runner.invoke(app, ["check", str(out), "--baseline", str(baseline), "--update"]).exit_code == 0
    return out


@pytest.fixture
def run(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    shutil.copy(finished.parent / "baseline.json", tmp_path / "baseline.json")
    return tmp_path / "run"


def damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGES[how](path.read_bytes()))


def adversarial(run: Path, eps: str = "eps1") -> Path:
    return next(p for p in (run / "adversarial").glob(f"deit_fgsm_{eps}_*.safetensors"))


# --- 1. one guarded reader ---------------------------------------------------------------------


@pytest.mark.parametrize("how", list(DAMAGES))
@pytest.mark.parametrize("name", ["run.json", "results.csv", "results.json"])
def test_check_on_a_damaged_run_file_is_one_line_naming_it(runner, run, name, how):
    damage(run / name, how)
    target = run / name if name == "results.json" else run  # results.json is read when named
    result = runner.invoke(app, ["check", str(target), "--baseline", str(run.parent / "baseline.json")])
    line = one_error_line(result, name)
    assert "recompute it with the same command" in line or "lacks the columns" in line


@pytest.mark.parametrize("how", ["truncated-half", "garbage", "wrong-type"])
def test_report_on_a_damaged_run_json_is_one_line(runner, run, tmp_path, how):
    damage(run / "run.json", how)
    one_error_line(runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "report")]), "run.json")


@pytest.mark.parametrize("how", ["truncated-half", "garbage"])
@pytest.mark.parametrize("which", ["clean", "adversarial"])
def test_report_on_damaged_adversarial_images_is_one_line(runner, run, tmp_path, which, how):
    path = run / "adversarial" / "clean.safetensors" if which == "clean" else adversarial(run, "eps2")
    damage(path, how)
    line = one_error_line(runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "report")]), path.name)
    assert "recompute it with the same command" in line or "--save-adversarial" in line


@pytest.mark.parametrize("how", list(DAMAGES))
def test_every_per_image_file_read_back_damaged_raises_one_line(run, how):
    """examples.csv.gz, OOD scores and the adversarial files, through the library readers."""
    shutil.copy(run / "examples.csv.gz", run / "ood_scores.csv.gz")
    readers = {
        "examples.csv.gz": lambda: load_examples(run),
        "ood_scores.csv.gz": lambda: load_scores(run),
        "adversarial/clean.safetensors": lambda: load_clean(run),
        str(adversarial(run).relative_to(run)): lambda: load_adversarial(adversarial(run)),
    }
    for name, read in readers.items():
        damage(run / name, how)
        with pytest.raises(DamagedFileError, match=Path(name).name.replace(".", r"\.")):
            read()


@pytest.mark.parametrize("value", ['"0.9"', "true", "[1]"])
def test_a_baseline_whose_value_is_not_a_number_is_one_line(runner, run, value):
    path = run.parent / "baseline.json"
    document = json.loads(path.read_text())
    first = document["records"][0]["value"]
    text = json.dumps(document).replace(f'"value": {json.dumps(first)}', f'"value": {value}', 1)
    path.write_text(text)
    line = one_error_line(runner.invoke(app, ["check", str(run), "--baseline", str(path)]), "baseline.json")
    assert "not a number" in line and "--update" in line


@pytest.mark.parametrize("how", ["truncated-half", "garbage", "wrong-type"])
def test_a_damaged_image_store_is_one_line_naming_both_files(tmp_path, how):
    store = tmp_path / "images-abc.bin"
    store.write_bytes(bytes(2 * 3 * 4 * 4))
    meta = tmp_path / "images-abc.json"
    meta.write_text(json.dumps({"shape": [2, 3, 4, 4], "labels": [0, 1]}))
    assert open_complete(store, "uint8") is not None
    damage(store if how != "wrong-type" else meta, how)
    with pytest.raises(DamagedFileError, match="images-abc") as info:
        open_complete(store, "uint8")
    assert "delete it and 'images-abc.json'" in str(info.value)


# --- 2. resume checks what it reuses -----------------------------------------------------------


def test_damaged_unit_files_are_recomputed_and_the_table_is_unchanged(runner, run, finished):
    """Every unit of the run damaged in its own way (six units, six damages), then one resume."""
    units = sorted((run / "units").glob("*.json"))
    assert len(units) == len(DAMAGES)
    for unit, how in zip(units, DAMAGES, strict=True):
        damage(unit, how)
    result = runner.invoke(app, [*EVAL, "--out", str(run)])
    ok(result)
    assert result.exit_code == 0
    assert all(json.loads(unit.read_text())["key"] for unit in units)
    assert (run / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


@pytest.mark.parametrize("loss", ["folder removed", "smaller budget removed", "clean truncated", "file truncated"])
def test_units_whose_adversarial_files_are_gone_are_recomputed(runner, run, finished, loss):
    """``rm -rf adversarial`` and the disk-full rerun (the smaller budget's file gone) both mend themselves."""
    if loss == "folder removed":
        shutil.rmtree(run / "adversarial")
    elif loss == "smaller budget removed":
        adversarial(run, "eps1").unlink()
    elif loss == "clean truncated":
        damage(run / "adversarial" / "clean.safetensors", "truncated-half")
    else:
        damage(adversarial(run, "eps2"), "truncated-half")
    result = runner.invoke(app, [*EVAL, "--out", str(run)])
    ok(result)
    assert result.exit_code == 0, result.output
    assert "--out" not in result.stderr
    assert load_clean(run)["x"].tobytes() == load_clean(finished)["x"].tobytes()
    for path in adversarial_files(finished):
        mended, original = load_adversarial(run / "adversarial" / path.name), load_adversarial(path)
        assert mended.x_adv.tobytes() == original.x_adv.tobytes(), path.name
        assert (run / "adversarial" / path.name).stat().st_size == path.stat().st_size


# --- 4. bounds that stop the work --------------------------------------------------------------


def test_bisection_stops_where_float64_cannot_narrow_the_bracket():
    class Threshold(torch.nn.Module):
        def forward(self, x):  # class 1 once the mean brightness passes 0.5 + 1/300
            score = x.double().mean(dim=(1, 2, 3)) - (0.5 + 1 / 300)
            return torch.stack([-score, score], dim=1).float()

    calls = []

    def brighten(model, images, labels, eps):
        calls.append(eps)
        assert len(calls) < 500, "the bisection does not stop"
        return (images + eps).clamp(0, 1)

    images, labels = torch.full((2, 3, 4, 4), 0.5), torch.zeros(2, dtype=torch.long)
    result = bisect(brighten, Threshold(), images, labels, norm="Linf", eps_max=16 / 255, resolution=1e-20)
    assert len(calls) < 80
    assert float(result.eps_star.max()) == pytest.approx(1 / 300, abs=1e-6)


def _shipped(name: str) -> dict[str, torch.Tensor]:
    root = Path(__import__("ellrobust").__file__).parent
    return load_file(str(next(root.rglob(name))))


def test_a_stray_block_key_is_refused_before_any_layer_is_built(runner, tmp_path):
    state = _shipped("digits-deit-micro.safetensors")
    state["blocks.999999.norm1.weight"] = torch.zeros(96)
    save_file(state, str(tmp_path / "stray.safetensors"))
    args = ["eval", "-m", "vit", "-c", str(tmp_path / "stray.safetensors"), "--heads", "3", "-n", "4"]
    line = one_error_line(runner.invoke(app, [*args, "--attack", "none", "--out", str(tmp_path / "r")]))
    assert "'blocks.999999.norm1.weight'" in line and "depth" in line


# --- 5. paths and names ------------------------------------------------------------------------


def test_an_over_long_out_name_is_one_line(runner, tmp_path):
    out = tmp_path / ("x" * 300)
    line = one_error_line(runner.invoke(app, ["eval", "-m", "deit", "-n", "4", "--attack", "none", "--out", str(out)]))
    assert "shorter name" in line and len(line) < 600


def test_report_out_naming_a_file_is_one_line(runner, finished, tmp_path):
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        one_error_line(runner.invoke(app, ["report", str(finished), "--out", str(out)]), "file")


def test_convert_into_a_folder_and_of_tied_weights(runner, tmp_path):
    weights = torch.randn(4, 4)
    torch.save({"embed.weight": weights, "head.weight": weights, "row": weights[0]}, tmp_path / "tied.pth")
    one_error_line(runner.invoke(app, ["convert", str(tmp_path / "tied.pth"), str(tmp_path)]), "is a folder")
    result = runner.invoke(app, ["convert", str(tmp_path / "tied.pth"), str(tmp_path / "tied.safetensors")])
    ok(result)
    assert result.exit_code == 0
    back = load_file(str(tmp_path / "tied.safetensors"))
    assert torch.equal(back["head.weight"], weights) and torch.equal(back["row"], weights[0])


@pytest.mark.parametrize("entry", ["²", "9" * 2_000_000 + "a"])
def test_indices_entries_are_checked_and_quoted_short(runner, tmp_path, entry):
    (tmp_path / "indices.txt").write_text(f"0\n{entry}\n", encoding="utf-8")
    args = ["eval", "-m", "deit", "--indices", str(tmp_path / "indices.txt"), "--attack", "none"]
    line = one_error_line(runner.invoke(app, [*args, "--out", str(tmp_path / "r")]), "line 2")
    assert len(line) < 500


def test_quote_keeps_at_most_about_200_characters():
    assert quote("abc") == "'abc'"
    long = quote("y" * 10_000)
    assert len(long) < 240 and "10,000 characters" in long


def test_a_head_of_another_size_does_not_advise_an_eval_flag(runner, tmp_path):
    state = _shipped("digits-deit-micro.safetensors")
    state["head.weight"], state["head.bias"] = state["head.weight"][:5], state["head.bias"][:5]
    save_file(state, str(tmp_path / "five.safetensors"))
    args = ["eval", "-m", "deit", "-c", str(tmp_path / "five.safetensors"), "-n", "4", "--attack", "none"]
    line = one_error_line(runner.invoke(app, [*args, "--out", str(tmp_path / "r")]))
    assert "Pass --reset-head" not in line and "`ellrobust train --reset-head`" in line


# --- 6. SIGTERM --------------------------------------------------------------------------------


def test_sigterm_ends_like_ctrl_c_removes_the_image_store_and_resumes(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for k in range(16):
        (root / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"c{k % 2}" / f"{k}.png")
    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "ellrobust", "eval", "-m", "deit-nano", "--data", "imagefolder", "--data-root",
        str(root), "--attack", "pgd", "--steps", "5", "--eps", "1/255,2/255", "--memory-budget", "0.000001",
        "--workers", "0", "--batch-size", "8", "--no-sanity", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob("images-*.bin")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("interrupted: finished units are saved"), err
    assert "Traceback" not in err
    assert not list(out.glob("images-*")), "SIGTERM left the temporary image store"
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not list(out.glob("images-*"))
