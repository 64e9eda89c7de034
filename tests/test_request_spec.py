"""The request spec is the one definition: every flag, Python keyword and flag named in a message is in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

import ellrobust
from ellrobust.cli import app
from ellrobust.core.errors import UsageError
from ellrobust.request.spec import Target, options_of, python_names
from ellrobust.request.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent


def _flags(command: str) -> set[str]:
    """The long flags of a command, as Click sees them (``--help`` left out)."""
    cmd = typer.main.get_command(app).commands[command]
    return {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)} - {
        "--help",
        "-h",
    }


def _spec_flags(command: str) -> set[str]:
    return {f for o in options_of(command).values() for flags in o.flags for f in flags.split("/")}


@pytest.mark.parametrize("command", ["eval", "collapse"])
def test_every_flag_of_the_command_is_in_the_spec_and_the_reverse(command):
    assert _flags(command) == _spec_flags(command)


def test_every_flag_named_in_a_message_exists():
    """A message may only advise a flag that some command has (the spec's, or another command's own)."""
    known = _spec_flags("eval") | _spec_flags("collapse")
    for cmd in typer.main.get_command(app).commands.values():
        known |= {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
    named: dict[str, str] = {}
    for path in (ROOT / "ellrobust").rglob("*.py"):
        for message in re.findall(r"(?:UsageError|error)\((?:[^()]|\([^()]*\))*\)", path.read_text(), re.S):
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", message):
                named.setdefault(flag, str(path.relative_to(ROOT)))
    stale = {flag: where for flag, where in named.items() if flag not in known}
    assert not stale, f"messages name flags no command has: {stale}"


def test_every_eval_flag_is_a_keyword_of_evaluate_under_its_spec_name_and_the_reverse():
    """Per-model flags are a model's settings in Python; --json and --report shape the terminal only."""
    eval_options = options_of("eval")
    python = set(python_names())
    for name, option in eval_options.items():
        if option.per_model or name == "models":
            continue
        assert (name in python) != (option.target is Target.CLI), name
    assert python <= set(eval_options)
    per_model = {o.name for o in eval_options.values() if o.per_model}
    assert per_model <= set(ellrobust.api.MODEL_KEYS)


def test_evaluate_refuses_an_unknown_keyword_listing_the_valid_ones(tmp_path):
    with pytest.raises(UsageError, match="Choices: data") as info:
        ellrobust.evaluate(["deit-nano"], stepz=3, out=tmp_path)
    assert "\n" not in str(info.value)


def test_python_messages_name_the_argument(tmp_path):
    with pytest.raises(UsageError, match=r"eps_max= 5 is outside \(0, 1\]"):
        ellrobust.evaluate(["deit-nano"], attacks="fmn", eps_max=5, out=tmp_path)


SUITES = [
    ("unknown key", "epsilon = 3", "unknown key 'epsilon'; a suite takes description, eps"),
    ("wrong type", "m_grad = 3", "m_grad must be one of"),
    ("string boolean", 'collapse = "false"', "collapse must be true or false (got 'false')"),
    ("n not a number", 'n = "abc"', "n must be a whole number (got 'abc')"),
    ("eps_max above 1", '[[attack]]\nname = "fmn"\neps_max = 5', "--eps-max 5 is outside (0, 1]"),
    ("resolution too fine", '[[attack]]\nname = "bisect-fgsm"\nresolution = 1e-20', "--resolution 1e-20 is below"),
    ("non-table attack", 'attack = "pgd"', "attack must be a list of tables"),
    ("non-string attack name", "[[attack]]\nname = 5", "name must be a string"),
    ("non-table corruptions", "corruptions = 3", "corruptions must be a table"),
    ("unknown attack key", '[[attack]]\nname = "pgd"\nstepz = 3', "takes no parameter stepz"),
]


@pytest.mark.parametrize(("text", "needle"), [s[1:] for s in SUITES], ids=[s[0] for s in SUITES])
def test_a_bad_suite_is_one_line_naming_the_key(runner, tmp_path, text, needle):
    suite = tmp_path / "s.toml"
    suite.write_text(text + "\n")
    with pytest.raises(UsageError) as info:
        load_suite(suite)
    assert needle in str(info.value) and "\n" not in str(info.value)
    result = runner.invoke(app, ["eval", "-m", "deit-nano", "--data", "synthetic", "--suite", str(suite)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == f"error: {info.value}"


@pytest.mark.parametrize(
    ("flag", "key", "value"),
    [("--eps-max", "eps_max", "2"), ("--resolution", "resolution", "1e-20")],
)
def test_bounds_are_the_same_for_flag_suite_and_python(runner, tmp_path, flag, key, value):
    attack = "fmn" if key == "eps_max" else "bisect-fgsm"
    cli = runner.invoke(app, ["eval", "-m", "deit-nano", "--data", "synthetic", "--attack", attack, flag, value])
    suite = tmp_path / "s.toml"
    suite.write_text(f'[[attack]]\nname = "{attack}"\n{key} = {value}\n')
    with pytest.raises(UsageError) as from_suite:
        load_suite(suite)
    with pytest.raises(UsageError) as from_python:
        ellrobust.evaluate(["deit-nano"], attacks=attack, out=tmp_path, **{key: float(value)})
    assert cli.exit_code == 2
    tail = cli.stderr.strip().split(f"{flag} ", 1)[1].split(" ", 1)[1]
    assert str(from_suite.value).endswith(tail) and str(from_python.value).endswith(tail)
