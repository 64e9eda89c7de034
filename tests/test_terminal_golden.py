"""A golden comparison of the tables ``ellrobust eval`` prints: a small real run, byte for byte.

The run (the shipped ``deit`` and ``deit-elliptical`` on the embedded digits, FGSM and PGD at two
budgets under both ``m_grad`` modes, one corruption at two severities, the collapse probe) takes a few
seconds; its tables are printed by ``eval`` itself into a console of fixed width without colour and
compared with ``tests/golden/eval_tables.txt``. A change to a label, a column or a number's format
shows up here as a diff; when such a change is intended, regenerate the file on purpose::

    ELLROBUST_REGENERATE_GOLDEN=1 pytest tests/test_terminal_golden.py

and review the diff before committing it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from rich.console import Console

from ellrobust.cli import app

GOLDEN = Path(__file__).parent / "golden" / "eval_tables.txt"
ARGS = [
    "eval", "-m", "deit-elliptical", "-m", "deit", "--attack", "fgsm,pgd", "--steps", "3", "--eps", "2/255,8/255",
    "--m-grad", "both", "--corruption", "fog", "--severity", "1,3", "--collapse", "-n", "40", "--details",
]  # fmt: skip
#: The README's quick start (on fewer images), whose default output must fit a 100-column terminal.
QUICK_START = ["eval", "--model", "deit-elliptical", "--model", "deit", "--attack", "pgd", "-n", "40"]
WIDTH = 160  # what ``eval`` uses when its output is piped


def test_eval_tables_match_the_golden_file(tmp_path, runner, monkeypatch):
    import ellrobust.cli.terminal as render

    buffer = io.StringIO()
    monkeypatch.setattr(render, "stdout", Console(file=buffer, width=WIDTH, color_system=None, soft_wrap=True))
    result = runner.invoke(app, [*ARGS, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    text = buffer.getvalue()
    if os.environ.get("ELLROBUST_REGENERATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "eval's tables changed; see this file's docstring to regenerate on purpose"


def test_the_quick_starts_default_output_fits_100_columns(tmp_path, runner, monkeypatch):
    import ellrobust.cli.terminal as render

    buffer = io.StringIO()
    monkeypatch.setattr(render, "stdout", Console(file=buffer, width=100, color_system=None, soft_wrap=True))
    result = runner.invoke(app, [*QUICK_START, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("Summary") and "Verdict" in lines and "Paired differences" not in buffer.getvalue()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
