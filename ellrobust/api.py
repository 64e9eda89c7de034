"""The library's front door: :func:`evaluate` any models, registered or not, and get :class:`Results`.

RobustBench's ``benchmark(model, ...)`` and AutoAttack take any ``nn.Module``; so does this::

    import ellrobust
    results = ellrobust.evaluate({"mine": net, "deit-elliptical": "deit-elliptical"}, attacks=["fgsm", "pgd"], n=200)
    results.table      # one typed row per measured number (pandas)
    results.examples   # per-example outcomes
    results.verdict    # claims with the numbers behind them

:func:`evaluate` turns Python values into the request (a frozen :class:`~ellrobust.request.config.EvalConfig`,
plain data) and the modules that go beside it, then calls :func:`run_config`. The CLI's ``eval`` and
``collapse`` build the request from their flags and call :func:`run_config` too: one path from a
request to a run folder and its :class:`Results`, whoever asks.

This module sits below the CLI (``tests/test_structure.py``) and imports the engine, the verdict and
pandas only when called, so ``import ellrobust`` and ``ellrobust --version`` stay as quick as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ellrobust.core.errors import UsageError
from ellrobust.core.parsing import parse_channels, parse_elliptical_layers, parse_heads
from ellrobust.models import state_dict_digest
from ellrobust.models.any_module import not_a_model
from ellrobust.models.zoo import checkpoint_architecture, is_model_name
from ellrobust.request.build import build_config, check_python_names
from ellrobust.request.spec import Caller, python_names

if TYPE_CHECKING:
    import pandas as pd

    from ellrobust.request.config import EvalConfig
    from ellrobust.run.context import ProgressFn
    from ellrobust.verdict.claim_types import Claim

__all__ = ["CHECKPOINT_SUFFIXES", "Results", "default_out", "evaluate", "run_config"]

#: File endings that make a string a checkpoint rather than a model name (with a path separator, or
#: an existing file): what ellrobust's safe reader takes.
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

#: The keys of a model given as a mapping: what builds it, and the settings of that one model (the
#: CLI's per-model ``--checkpoint``, ``--mean``, ``--std``, ``--heads``, ``--elliptical-layers``).
MODEL_KEYS = ("model", "checkpoint", "mean", "std", "heads", "elliptical_layers")


@dataclass(frozen=True, eq=False, repr=False)
class Results:
    """What one evaluation measured, as data; the run folder holds the same, and more, on disk.

    Attributes:
        table: the typed rows, one per measured number (README, "Results": columns and metric
            names are a contract), exactly as ``results.csv`` holds them.
        examples: the per-example outcomes (one row per model, measurement and image: ``correct``
            0/1), exactly as ``examples.csv.gz`` holds them.
        verdict: the claims of the verdict (:func:`ellrobust.verdict.rules.claims`) for every elliptical ×
            plain pair of models: what the run supports, contradicts, or cannot tell at its n, with
            the numbers behind each; empty unless the run has an elliptical and a plain model.
        run_dir: the run folder (``results.csv``, ``examples.csv.gz``, ``run.json``, finished units):
            ``ellrobust report`` and ``ellrobust check`` read it, and the same request with the same
            folder resumes it.
        models: run.json's record of each model: its weights' digest (``checkpoint``), where the
            weights came from (``weights``), ``elliptical``, ``tokens`` and its architecture
            (``config``: ``describe()``).
        computed, reused: the units this call computed, and those it found finished in ``run_dir``.
    """

    table: pd.DataFrame
    examples: pd.DataFrame
    verdict: list[Claim]
    run_dir: Path
    models: dict[str, dict]
    computed: int
    reused: int

    def summary(self) -> str:
        """A few lines for a notebook: the run, accuracy per model and measurement, failed sanity checks, the verdict.

        The CLI's warnings and tables are the CLI's; a library prints nothing, so what a reader must
        not miss (a sanity check that failed) is here.
        """
        df = self.table
        n, seed = (int(df[c].dropna().iloc[0]) if df[c].notna().any() else None for c in ("n", "seed"))
        dataset = df["dataset"].dropna().iloc[0] if df["dataset"].notna().any() else "?"
        models = f"{len(self.models)} model{'s' if len(self.models) != 1 else ''}"
        units = f"{self.computed} units computed, {self.reused} reused"
        lines = [f"ellrobust.Results: {dataset}, n={n}, seed={seed}, {models} ({units}) in {self.run_dir}"]
        accuracy = _accuracy_summary(df, list(self.models))
        if accuracy is not None:
            lines += [
                "accuracy:",
                *("  " + line for line in accuracy.to_string(float_format="{:.3f}".format).splitlines()),
            ]
        failed = df[df["method"].eq("sanity") & df["value"].eq(0)]
        if not failed.empty:
            checks = ", ".join(
                f"{metric.removeprefix('sanity_')} ({model})"
                for model, metric in zip(failed.model, failed.metric, strict=True)
            )
            lines.append(f"sanity checks failed: {checks} (the table's rows with method 'sanity')")
        if self.verdict:
            from ellrobust.report.claim_sentences import claim_line

            lines += ["verdict:", *(f"  {claim.status.value}: {claim_line(claim)}" for claim in self.verdict)]
        return "\n".join(lines)

    def report(self, out: str | os.PathLike | None = None, *, latex: bool = False) -> Path:
        """Write the run's report, as ``ellrobust report RUN --out OUT [--latex]`` does; returns report.md's path.

        Args:
            out: the folder for ``report.md`` and ``figures/``; None: the run folder (where ``eval --report``
                writes it).
            latex: also write ``tables.tex`` there: the report's main tables as booktabs LaTeX, in a
                minimal document that compiles as it is.
        """
        from ellrobust.core.files import check_destination
        from ellrobust.report.latex_tables import write_latex
        from ellrobust.report.writer import write_report

        folder = check_destination(self.run_dir if out is None else out, "out=", folder=True)
        path = write_report([self.run_dir], folder)
        if latex:
            write_latex([self.run_dir], folder)
        return path

    def __repr__(self) -> str:
        return self.summary()


def _accuracy_summary(df: pd.DataFrame, order: list[str]) -> pd.DataFrame | None:
    """Model × measurement: clean accuracy, robust accuracy per attack and budget, mean corruption accuracy.

    Only fp32 attack rows (the verdict's precision); the ``m_grad`` of an elliptical model's rows is
    named when it is ``full`` (the paper's detached metric, and a baseline's empty one, share columns).
    """
    import pandas as pd

    rows = df[df["layer"].isna() & df["baseline"].fillna("").eq("")]
    clean = rows[rows["metric"].eq("clean_accuracy")]
    attacked = rows[rows["metric"].eq("robust_accuracy") & rows["precision"].fillna("fp32").eq("fp32")]
    corrupted = rows[rows["metric"].eq("corruption_accuracy")]
    labels = [
        f"{method} {eps * 255:.3g}/255" + (" m_grad=full" if m_grad == "full" else "")
        for method, eps, m_grad in zip(attacked["method"], attacked["eps"], attacked["m_grad"].fillna(""), strict=True)
    ]
    robust = attacked.assign(label=labels).pivot_table(
        index="model", columns="label", values="value", aggfunc="first", sort=False
    )
    frame = pd.concat([clean.set_index("model")["value"].rename("clean"), robust], axis=1)
    if not corrupted.empty:
        frame["corruptions (mean)"] = corrupted.groupby("model")["value"].mean()
    if frame.empty:
        return None
    frame = frame.reindex([m for m in order if m in frame.index])
    frame.index.name = frame.columns.name = None
    return frame


def evaluate(
    models: Mapping[str, object] | Sequence[str],
    *,
    data: str = "digits",
    attacks: str | Sequence[str] | Mapping[str, Mapping[str, object] | None] | None = None,
    eps: float | str | Sequence[float | str] | None = None,
    corruptions: str | Sequence[str] | None = None,
    collapse: object = False,
    n: int | None = None,
    out: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    **options: object,
) -> Results:
    """Evaluate models on the same images: clean accuracy, attacks, corruptions, collapse, the verdict.

    Everything ``ellrobust eval`` does, from Python, for any model. Nothing is printed; the run folder
    is written as the CLI writes it (``ellrobust report`` and ``check`` read it).

    Args:
        models: names → models, in the order of the tables (a list of registered names is each its
            own name). A model is

            * a registered name, as ``ellrobust eval -m`` takes it (``deit-elliptical``,
              ``deit-small``, ``timm:resnet18``; ``ellrobust models`` lists them);
            * a checkpoint: a :class:`pathlib.Path`, or a string that is no registered name and ends in
              ``.safetensors``, ``.pth``, ``.pt`` or ``.bin``, contains a path separator, or names an
              existing file (a registered name wins over a file of that name: ``Path("deit")`` is the
              file). A checkpoint on its own builds
              ellrobust's ViT from its shapes, as ``-m vit -c FILE`` does, elliptical when its metadata
              records elliptical layers (``ellrobust train`` writes them); name the architecture for
              anything else, ``{"model": "vit-elliptical", "checkpoint": path, "heads": 6}``;
            * any ``torch.nn.Module`` that takes float (B, 3, S, S) images in [0, 1] and returns
              (B, num_classes) logits, evaluated as it is (:mod:`ellrobust.models.any_module`). It is
              not elliptical unless it says so (``is_elliptical``, with ``set_m_grad``), and it gets
              collapse rows if it exposes its tokens (``depth``, ``num_prefix_tokens``,
              ``iter_blocks``; timm VisionTransformers do): README, "Python: any model";
            * a mapping with ``model`` (a name or a module) and that model's settings:
              ``checkpoint``, ``mean`` and ``std`` (the normalisation a module expects, applied
              inside the model so that attacks stay in [0, 1] pixels; for a name, it overrides the
              model's own), ``heads`` and ``elliptical_layers`` (as the CLI's per-model flags).

            A module is borrowed, not copied: the run moves it to ``device`` (where it stays) and
            puts it in eval mode (each submodule's mode is restored when the run ends); its
            parameters' ``requires_grad`` is left as it is (attacks differentiate with respect to
            the images only). Its identity, in every unit key and in run.json, is the digest of its
            weights and its class, normalisation and size (``describe()``).
        data: the dataset (``ellrobust datasets``): the embedded digits by default.
        attacks: attack names (``"pgd"``, ``"fgsm,pgd"``, ``["fgsm", "pgd"]``), or names → parameters,
            ``{"pgd": {"steps": 20, "step_size": "0.1*eps"}, "fgsm": None}`` (``ellrobust attacks``
            lists each attack's; ``eps`` among them gives that attack budgets of its own). ``"none"``
            or ``[]``: no attack. None: the CLI's default, FGSM and 10-step PGD (``attacks/quick.toml``)
            when no corruption or collapse is asked for, else no attack.
        eps: budgets in [0, 1] pixel units: ``8/255``, ``"8/255"``, ``"1/255,2/255"`` or a list;
            None: the dataset's (or an L2 attack's) defaults.
        corruptions: ImageNet-C corruptions: ``"all"``, ``"extra"``, names or a list.
        collapse: True (or a :class:`~ellrobust.measures.collapse_probe.CollapseConfig`) for per-layer collapse
            metrics of every model with tokens, on clean images and on each attack's adversarial ones.
        n: images, a seeded subset of the split (None: all of it).
        out: the run folder. None: ``$XDG_CACHE_HOME/ellrobust/runs/<dataset>-<hash of the request>``
            (``~/.cache`` without ``XDG_CACHE_HOME``), not the working directory: the same request
            resumes there, and ``Results.run_dir`` says where it is (:func:`default_out`).
        progress: called with each :class:`~ellrobust.run.context.ProgressEvent` (a unit starts, advances,
            ends); None: silent.
        **options: the request's other settings, as the CLI's flags set them: ``batch_size``,
            ``seed``, ``device``, ``precision`` (``"bf16"``, ``"bf16,fp32"``), ``m_grad``
            (``"detach"``, ``"full"``, ``"both"``), ``severities`` (``"1-5"``, ``3``), ``workers``
            (``"auto"`` or a number), ``split``, ``data_root``, ``image_size``, ``sanity``,
            ``deterministic``, ``save_adversarial``, ``transfer``, ``cache_dir``, ``corruption_source``,
            ``corruption_protocol``, ``memory_budget_gb``, ``indices`` (a file of dataset indices or
            relative paths: exactly those images, README "Datasets"), ``class_map`` (an image folder's
            class numbering, timm's format), ``labels`` (``"true"``, ``"predicted"``), and
            ``max_image_pixels`` (not part of the request: it changes no number); ``suite`` (a TOML
            suite, as ``--suite``); ``log`` (trackers to log the finished run to, as ``--log``:
            ``"tensorboard:DIR"``, ``"mlflow:URI"`` or a list; :mod:`ellrobust.report.trackers`); and every
            attack's overrides, as the flags set them for every
            attack: ``steps``, ``step_size``, ``restarts``, ``random_start``, ``norm``, ``samples``,
            ``lr``, ``delta``, ``queries``, ``eps_max``, ``resolution``. Each is the option of that name
            in :mod:`ellrobust.request.spec`, with its flag's bounds. An unknown name is refused,
            listing the valid ones.

    Returns:
        The run's :class:`Results`.

    Raises:
        UsageError: bad input, in one line naming the problem and the fix, as the CLI says it: a
            value that is not a model, an unknown name, a module that cannot take the run's images
            or returns another number of classes, an unknown option or attack parameter.
    """
    from ellrobust.core.distributed import is_main_process
    from ellrobust.data import image_pixel_limit
    from ellrobust.measures.collapse_probe import CollapseConfig
    from ellrobust.report.trackers import log_run, requested_trackers

    entries = _entries(models)
    check_python_names(options)
    if not (isinstance(collapse, bool | CollapseConfig) or collapse is None):
        raise UsageError(
            "collapse must be True, False or an ellrobust.measures.collapse_probe.CollapseConfig "
            f"(got a {type(collapse).__name__})."
        )
    trackers = requested_trackers(options.pop("log", None), Caller.PYTHON)
    pixels = options.pop("max_image_pixels", None)
    if pixels is not None:
        pixels = python_names()["max_image_pixels"].read(pixels, Caller.PYTHON)
    given = {"data": data, "attacks": attacks, "eps": eps, "corruptions": corruptions, "collapse": collapse, "n": n}
    config = build_config(
        {**given, **options}, Caller.PYTHON, default_collapse=CollapseConfig(), per_model=_per_model_fields(entries)
    )
    modules = {e.name: e.module for e in entries if e.module is not None}
    with image_pixel_limit(pixels):
        results = run_config(config, modules=modules, out=out, progress=progress)
    if is_main_process():
        log_run(results.run_dir, trackers, "log=")
    return results


def run_config(
    config: EvalConfig,
    *,
    modules: Mapping[str, nn.Module] | None = None,
    out: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    command: str | None = None,
) -> Results:
    """Run a request, with the modules it names, into a run folder: what :func:`evaluate` and the CLI call.

    Args:
        config: the request.
        modules: models the caller built, by their names in ``config.models``.
        out: the run folder; None: :func:`default_out`.
        progress: progress events; None: silent.
        command: the command line that asked for the run, recorded in run.json (the CLI's).
    """
    from ellrobust.engine.runner import Evaluation
    from ellrobust.run.context import no_progress
    from ellrobust.verdict.rules import claims, elliptical_models

    modules = dict(modules or {})
    run_dir = Path(out).expanduser() if out is not None else default_out(config, modules)
    with _modes_restored(modules.values()):
        result = Evaluation(config, run_dir, progress or no_progress, command=command, modules=modules).run()
    verdict = claims(result.table, elliptical_models({"models": result.models}))
    return Results(
        result.table, result.examples, verdict, result.run_dir, result.models, result.computed, result.reused
    )


def default_out(config: EvalConfig, modules: Mapping[str, nn.Module] | None = None) -> Path:
    """The run folder of a request when :func:`evaluate` is given none: in the user's cache, named after the request.

    ``$XDG_CACHE_HOME/ellrobust/runs/<dataset>-<hash>`` (``~/.cache/...`` without ``XDG_CACHE_HOME``):
    a library call must not litter the caller's working directory, and the CLI's ``reports/runs/`` is
    the CLI's choice for a project folder. The hash is the CLI's for the same request (the same
    folder name), plus each module's class and weights' digest, so that a notebook cell run again
    resumes its run, and another module gets another folder.
    """
    ident = config.to_dict()
    if modules:
        ident["modules"] = {
            name: f"{type(m).__module__}.{type(m).__qualname__}:{state_dict_digest(m)}" for name, m in modules.items()
        }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ellrobust" / "runs" / f"{config.dataset}-{digest}"


@contextlib.contextmanager
def _modes_restored(modules: Iterable[object]) -> Iterator[None]:
    """Every submodule's training mode as the caller had it, once the run (which needs eval mode) is over."""
    modes = [(m, m.training) for module in modules if isinstance(module, nn.Module) for m in module.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


# --- models ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One model of :func:`evaluate`: its name, what builds it (a registered name or a module), its settings."""

    name: str
    architecture: str | None = None
    module: nn.Module | None = None
    checkpoint: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    heads: int | None = None
    elliptical_layers: tuple[int, ...] | None = None


def _entries(models: object) -> list[_Entry]:
    if isinstance(models, Sequence) and not isinstance(models, str) and all(isinstance(m, str) for m in models):
        if len(set(models)) != len(models):
            raise UsageError("the same model is given twice; give each model once.")
        models = {m: m for m in models}
    if not isinstance(models, Mapping):
        raise UsageError(
            f"models must map names to models, e.g. {{'mine': net, 'deit-elliptical': 'deit-elliptical'}} "
            f"(got a {type(models).__name__}); a list may hold registered names only."
        )
    for name in models:
        if not isinstance(name, str) or not name.strip():
            raise UsageError(
                f"model names must be non-empty strings (got {name!r}); they name the models in every table."
            )
    return [_entry(name, value) for name, value in models.items()]


def _entry(name: str, value: object) -> _Entry:
    if not isinstance(value, Mapping):
        return _source(name, value)
    unknown = [k for k in value if k not in MODEL_KEYS]
    if unknown:
        raise UsageError(
            f"model {name!r}: unknown setting {', '.join(map(repr, unknown))}; a model takes {', '.join(MODEL_KEYS)}."
        )
    if "model" not in value and "checkpoint" not in value:
        raise UsageError(
            f"model {name!r} names no model; give {{'model': a name or a module}} or {{'checkpoint': path}}."
        )
    entry = _source(name, value["model"]) if "model" in value else _Entry(name)
    if entry.module is not None:
        given = [k for k in ("checkpoint", "heads", "elliptical_layers") if value.get(k) is not None]
        if given:
            raise UsageError(
                f"model {name!r} is a module, which brings its own weights and architecture: "
                f"{', '.join(given)} does not apply; "
                "load weights into it (load_state_dict), or give a name with the checkpoint."
            )
    checkpoint = entry.checkpoint
    if value.get("checkpoint") is not None:
        if checkpoint is not None:
            raise UsageError(
                f"model {name!r} has two checkpoints ({checkpoint!r} and {str(value['checkpoint'])!r}); give one."
            )
        checkpoint = str(Path(value["checkpoint"]).expanduser())
    architecture = entry.architecture if "model" in value else checkpoint_architecture(checkpoint)
    return _Entry(
        name,
        architecture,
        entry.module,
        checkpoint,
        _channels(value.get("mean"), "--mean"),
        _channels(value.get("std"), "--std"),
        parse_heads([str(value["heads"])])[0] if value.get("heads") is not None else None,
        _layers(value.get("elliptical_layers")),
    )


def _source(name: str, value: object) -> _Entry:
    """A model given as a name, a path or a module."""
    if isinstance(value, nn.Module):
        return _Entry(name, module=value)
    if isinstance(value, os.PathLike) or (isinstance(value, str) and _is_checkpoint(value)):
        path = str(Path(value).expanduser())
        return _Entry(name, checkpoint_architecture(path), checkpoint=path)
    if isinstance(value, str):
        return _Entry(name, value)
    raise not_a_model(name, value)


def _is_checkpoint(text: str) -> bool:
    """A string names a checkpoint, not a model, when it is no registered name and looks like a file or is one."""
    if is_model_name(text):
        return False
    return text.endswith(CHECKPOINT_SUFFIXES) or "/" in text or os.sep in text or Path(text).expanduser().is_file()


def _channels(value: object, option: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    text = ",".join(str(v) for v in value) if isinstance(value, Sequence) and not isinstance(value, str) else str(value)
    return parse_channels([text], option)[0]


def _layers(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    text = ",".join(str(v) for v in value) if isinstance(value, Sequence) and not isinstance(value, str) else str(value)
    return parse_elliptical_layers([text])[0]


def _per_model_fields(entries: list[_Entry]) -> dict[str, tuple]:
    """The request's per-model fields from each model's settings (empty when no model has one)."""
    values = {
        "models": tuple(e.name for e in entries),
        "architectures": [e.architecture if e.architecture != e.name else None for e in entries],
        "checkpoints": [e.checkpoint for e in entries],
        "elliptical_layers": [e.elliptical_layers for e in entries],
        "heads": [e.heads for e in entries],
        "mean": [e.mean for e in entries],
        "std": [e.std for e in entries],
    }
    return {k: tuple(v) if k == "models" or any(x is not None for x in v) else () for k, v in values.items()}
