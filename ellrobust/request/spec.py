"""The request's options, each defined once: name, flags, type, parser, bounds, help, panel, default.

``ellrobust eval`` and ``ellrobust collapse`` generate their Typer options from :data:`OPTIONS`,
:func:`ellrobust.evaluate` accepts its Python names, and suite files (:mod:`~ellrobust.request.suites`)
read their keys through it, so a value is checked the same way wherever it comes from. Each message
names the value as its caller wrote it (:class:`Caller`): ``--eps-max`` on the command line,
``eps_max=`` in Python, ``eps_max`` in a suite file.

The option texts of the command line (Typer types, one-line help) stay plain data here; the CLI turns
them into ``typer.Option`` (:mod:`ellrobust.cli.options`), so this floor imports no CLI library.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ellrobust.attacks.target_labels import parse_labels
from ellrobust.core.parsing import (
    MAX_BUDGET,
    MAX_IMAGES,
    MIN_RESOLUTION,
    parse_channels,
    parse_checkpoints,
    parse_elliptical_layers,
    parse_heads,
)
from ellrobust.corruptions.protocol import CorruptionProtocol
from ellrobust.request import values as v

#: ``--m-grad``: detach (the paper), full (adaptive), or both side by side.
M_GRAD_CHOICES = ("detach", "full", "both")
#: The seeds torch's generators accept.
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)
#: The most GiB ``--memory-budget`` may name (a petabyte): beyond it, a typo.
MAX_MEMORY_GB = 1 << 20


class Caller(enum.Enum):
    """Who gave a value, which decides how a message names it."""

    CLI = "cli"
    PYTHON = "python"
    SUITE = "suite"


class Target(enum.Enum):
    """Where a parsed value goes: the request, every attack's parameters, or the caller alone."""

    REQUEST = "request"  # a field of EvalConfig (:attr:`Option.field`)
    ATTACK = "attack"  # an override of every attack's parameter of this name
    RUN = "run"  # how the run is carried out, not what it measures (``out``, ``max_image_pixels``, ``suite``)
    CLI = "cli"  # the command line's alone (``--json``, ``--report``, the collapse command's settings)


EVAL = frozenset({"eval"})
COLLAPSE = frozenset({"collapse"})
BOTH = EVAL | COLLAPSE

#: Help panels of ``--help`` (Typer's ``rich_help_panel``), in this order.
PANELS = ("models", "data", "attacks", "corruptions", "collapse", "statistics", "output", "performance")


@dataclass(frozen=True)
class Option:
    """One option of the request.

    Attributes:
        name: the Python keyword of :func:`ellrobust.evaluate` (for a per-model option, the key of a
            model's mapping), and the suite key.
        flags: the command line's flags, the long one first (``--sanity/--no-sanity`` for a switch pair).
        kind: the type Typer parses the flag's text into (``str`` for compact forms such as ``1/255,2/255``).
        default: the command line's default (None: not given; the request's own default applies).
        help: one line of ``--help``.
        panel: the ``--help`` panel (:data:`PANELS`).
        parse: the value as the request holds it, from CLI text, a TOML value or a Python value.
        target: where the value goes.
        field: the :class:`~ellrobust.request.config.EvalConfig` field, when it differs from ``name``.
        per_model: given once for all models or once per model (``--mean``); in Python, a model's setting.
        commands: the commands that have it.
    """

    name: str
    flags: tuple[str, ...]
    kind: object
    default: object
    help: str
    panel: str
    parse: v.Parser | None = None
    target: Target = Target.REQUEST
    field: str | None = None
    per_model: bool = False
    commands: frozenset[str] = EVAL

    @property
    def flag(self) -> str:
        """The long flag, as messages name it (``--sanity`` of ``--sanity/--no-sanity``)."""
        return self.flags[0].split("/")[0]

    @property
    def config_field(self) -> str:
        return self.field or self.name

    def label(self, caller: Caller) -> str:
        """How a message names this option for ``caller``."""
        return {Caller.CLI: self.flag, Caller.PYTHON: f"{self.name}=", Caller.SUITE: self.name}[caller]

    def read(self, value: object, caller: Caller) -> object:
        """The value as the request holds it; a bad one is a one-line :class:`UsageError`."""
        return self.parse(value, self.label(caller)) if self.parse is not None else value


def _per_model(parse: Callable[[list, str], object]) -> v.Parser:
    """A per-model flag's list (``--mean`` once, or once per ``--model``), parsed by the core parser."""
    return lambda values, label: parse(list(values), label)


def _models(values: object, label: str) -> tuple[str, ...]:
    return tuple(values)


def _checkpoints(values: list, label: str) -> tuple[str | None, ...]:
    return parse_checkpoints(values)


def _layers(values: list, label: str) -> tuple:
    return parse_elliptical_layers(values)


def _heads(values: list, label: str) -> tuple:
    return parse_heads(values)


def _labels(value: object, label: str) -> str:
    return parse_labels(value).value


_CORRUPTION_PROTOCOLS = tuple(p.value for p in CorruptionProtocol)
_IMAGES = f"at most {MAX_IMAGES:,}"
_N_HINT = "leave it out to take the whole split"

#: One line of ``--help`` per option (the collapse command words a few its own way).
HELP = {
    "models": (
        "Model name (repeat for several): deit, deit-elliptical, any of `ellrobust models`, vit / vit-"
        "elliptical (architecture read from the checkpoint or a transformers folder), or timm:NAME / "
        "torchvision:NAME / hf:DIR / robustbench:DATASET/THREAT/NAME."
    ),
    "checkpoint": (
        "Weights for each --model, in order (.safetensors, weights-only .pth, or a transformers ViT/DeiT "
        "folder); '-' for a model's default "
        "(shipped or random weights)."
    ),
    "elliptical_layers": (
        "0-based elliptical blocks, e.g. 1-11 (the default: every block after the first): once for every "
        "elliptical model, or once per --model in order ('-' keeps a model's default). Official elliptical "
        "checkpoints do not record them."
    ),
    "heads": (
        "Attention heads of `-m vit` / `-m vit-elliptical` (not in a checkpoint's shapes; checkpoints from "
        "`ellrobust train` record them): once for all such models, or once per --model in order ('-' for the "
        "others)."
    ),
    "mean": (
        "Normalisation mean inside the model, R,G,B (or one value): overrides the checkpoint's metadata or "
        "the pretrained config; once for all models, or once per --model in order ('-' keeps a model's own)."
    ),
    "std": "Normalisation std inside the model, like --mean.",
    "model_dir": (
        "Folder of a model zoo's weights, in its own layout: robustbench:DATASET/THREAT/NAME reads "
        "DIR/DATASET/THREAT/NAME.pt (default ./models, RobustBench's); nothing is downloaded."
    ),
    "data": "Dataset (see `ellrobust datasets`).",
    "data_root": "Folder holding the dataset (never downloaded).",
    "split": "Split to evaluate (default: the dataset's test/val split).",
    "n": (
        f"Number of images, a seeded subset of the split (default: all; {_IMAGES}). "
        "Under torchrun write -n (torchrun reads --n as one of its own options)."
    ),
    "indices": (
        "A file of the images to evaluate, one dataset index or path relative to the split folder a line "
        "(RobustBench's imagenet_test_image_ids.txt works as it is); with --n, a seeded subset of them."
    ),
    "class_map": "imagefolder: the class folder names, one a line, the line number (from 0) being the label (timm's).",
    "image_size": (
        "Side of the run's images: image folders are resized and cropped to it (default 224; other datasets "
        "have one size). It also states the input size of timm/torchvision models (default: their pretrained "
        "config's)."
    ),
    "max_image_pixels": (
        "Largest image (width × height) read from an image folder; a larger one stops the run as a possible "
        "decompression bomb (default: Pillow's 89478485). Raise it for genuine large images."
    ),
    "attacks": "Attacks, comma-separated (see `ellrobust attacks`), or 'none' for clean accuracy only.",
    "suite": "A TOML suite from attacks/ (default when no --attack: attacks/quick.toml).",
    "eps": "Budgets in [0, 1] pixel units, e.g. 1/255,2/255,4/255 (default: the dataset's).",
    "patches": (
        "Budgets of the patch attacks (patch, patch-fool, attention-fool): numbers of patches of the model's own "
        "size, e.g. 1,2,4 (the default); --eps never applies to them."
    ),
    "steps": f"Iterations (PGD, APGD, SPSA), at most {MAX_BUDGET:,}.",
    "step_size": "PGD step: absolute (2/255) or relative to eps (0.25*eps).",
    "restarts": f"Random restarts (PGD, APGD, Square), at most {MAX_BUDGET:,}.",
    "random_start": "PGD random start.",
    "norm": "Threat model of APGD/Square/AutoAttack: Linf or L2.",
    "samples": f"SPSA samples per gradient estimate, at most {MAX_BUDGET:,}.",
    "lr": "SPSA learning rate.",
    "delta": "SPSA finite-difference step.",
    "queries": f"Square Attack query budget, at most {MAX_BUDGET:,}.",
    "eps_max": (
        "Minimal-norm methods (fmn, bisect-*): the largest budget searched, e.g. 16/255 (default: 16/255 L∞, "
        "1.0 L2), at most 1; an image unbroken there is censored."
    ),
    "resolution": f"bisect-*: the width to which ε* is bisected (default 1/255/16; at least {MIN_RESOLUTION:g}).",
    "m_grad": "Attack through the elliptical metric: detach (the paper; default), full (adaptive), or both.",
    "sanity": "Run the attack sanity checks.",
    "transfer": (
        "Judge every model's adversarial images by every other model too (transfer_accuracy rows, a source × "
        "target table): a white-box attack weaker than a transferred one signals gradient masking."
    ),
    "corruptions": "ImageNet-C corruptions: all, extra, 3dcc (ImageNet-3DCC, precomputed), or names, comma-separated.",
    "severities": "Corruption severities, e.g. 1-5 (default) or 3.",
    "corruption_source": (
        "Precomputed ImageNet-C / ImageNet-3DCC / CIFAR-10-C folder instead of generating corruptions."
    ),
    "corruption_protocol": (
        "Corruption constants: imagenet-c (as released: JPEG quality 85), imagenet-c-raw (no JPEG), "
        "cifar-10-c (Hendrycks & Dietterich's for 32 px images) or auto (cifar-10-c under 64 px, else "
        "imagenet-c)."
    ),
    "collapse": "Add per-layer token cosine similarity, attention entropy and effective rank.",
    "feature": "Tokens to measure: residual (stream after each block) or attention (attention-branch output).",
    "no_cls": "Leave the class token out (the paper keeps it).",
    "per_head": "Also report each head (needs --feature attention).",
    "layers": "0-based blocks to measure, e.g. 0,3,5 or 0-5 (default: all).",
    "metrics": "Metrics, comma-separated; token_cosine alone is nearly free on top of a forward pass.",
    "seed": "Seed for the image subset and the attacks' randomness.",
    "labels": (
        "Attack the true labels of clean-correct images (true, the default), or every image's clean "
        "prediction (predicted, as the official Elliptical code): robust then means the prediction did not "
        "change."
    ),
    "out": "Run folder (default: reports/runs/<dataset>-<hash of the request>); re-running resumes it.",
    "json": "Print the result records as JSON on stdout instead of tables.",
    "report": "Write report.md and figures into the run folder at the end.",
    "details": "Print every table (attacks, corruptions, collapse, paired differences) before the summary.",
    "log": (
        "Log the results, the verdict and the figures to a tracker at the end: tensorboard:DIR or mlflow:URI "
        "(a local file: store works offline); repeat or separate with commas."
    ),
    "save_adversarial": (
        "Keep every attack's images: one safetensors file per model, attack and budget in the run folder's "
        "adversarial/ (index, x_adv, label, prediction; README, 'Adversarial images')."
    ),
    "batch_size": "Images per batch.",
    "precision": (
        "Precision of the attack iterations: fp32, tf32 or bf16, or several side by side (bf16,fp32). "
        "Verdicts are always fp32."
    ),
    "workers": (
        "Worker processes of the run's one pool (decoding, corruptions): auto (the cores for on-disk data, 0 "
        "for data in memory) or a number."
    ),
    "memory_budget_gb": (
        "GiB the decoded images may take in memory before they go to a memory-mapped file (default: half the "
        "available memory)."
    ),
    "cache_dir": "Cache folder for decoded images and generated corrupted images, reused by later runs.",
    "device": "Torch device, e.g. cpu or cuda (under torchrun: each rank's own GPU).",
    "deterministic": (
        "Deterministic CUDA kernels (torch.use_deterministic_algorithms, fixed cuBLAS workspace, no cuDNN "
        "autotuning): the same command on the same GPU and software gives the same table bit for bit. CPU "
        "runs are deterministic anyway."
    ),
}


def _option(name: str, flags: tuple[str, ...], kind: object, default: object, panel: str, *args, **kwargs) -> Option:
    """An :class:`Option` with its help text from :data:`HELP`."""
    return Option(name, flags, kind, default, HELP[name], panel, *args, **kwargs)


OPTIONS: tuple[Option, ...] = (
    _option("models", ("--model", "-m"), list[str], ..., "models", _models, commands=BOTH),
    _option(
        "checkpoint",
        ("--checkpoint", "-c"),
        list[str],
        [],
        "models",
        _checkpoints,
        field="checkpoints",
        per_model=True,
        commands=BOTH,
    ),
    _option(
        "elliptical_layers", ("--elliptical-layers",), list[str], [], "models", _layers, per_model=True, commands=BOTH
    ),
    _option("heads", ("--heads",), list[str], [], "models", _heads, per_model=True, commands=BOTH),
    _option(
        "mean",
        ("--mean",),
        list[str],
        [],
        "models",
        _per_model(parse_channels),
        per_model=True,
        commands=BOTH,
    ),
    _option(
        "std",
        ("--std",),
        list[str],
        [],
        "models",
        _per_model(parse_channels),
        per_model=True,
        commands=BOTH,
    ),
    _option("data", ("--data", "-d"), str, "digits", "data", v.text, field="dataset"),
    _option("data_root", ("--data-root",), Path | None, None, "data", v.path, commands=BOTH),
    _option("split", ("--split",), str | None, None, "data", v.text),
    _option("n", ("--n", "-n"), int | None, None, "data", v.whole(1, MAX_IMAGES, "number of images", _N_HINT)),
    _option("indices", ("--indices",), Path | None, None, "data", v.path),
    _option("class_map", ("--class-map",), Path | None, None, "data", v.path),
    _option("model_dir", ("--model-dir",), Path | None, None, "models", v.path, commands=BOTH),
    _option(
        "image_size",
        ("--img-size",),
        int | None,
        None,
        "data",
        v.whole(1, v.MAX_SIZE, "number of pixels"),
        commands=BOTH,
    ),
    _option(
        "max_image_pixels",
        ("--max-image-pixels",),
        int | None,
        None,
        "data",
        v.whole(1, 1 << 62, "number of pixels"),
        target=Target.RUN,
        commands=BOTH,
    ),
    _option("attacks", ("--attack", "-a"), str | None, None, "attacks"),
    _option("suite", ("--suite",), Path | None, None, "attacks", v.path, target=Target.RUN),
    _option("eps", ("--eps",), str | None, None, "attacks", v.eps_list),
    _option("patches", ("--patches",), str | None, None, "attacks", v.patch_list),
    _option(
        "steps", ("--steps",), int | None, None, "attacks", v.attack_param("steps", v.whole_any), target=Target.ATTACK
    ),
    _option("step_size", ("--step-size",), str | None, None, "attacks", v.text, target=Target.ATTACK),
    _option(
        "restarts",
        ("--restarts",),
        int | None,
        None,
        "attacks",
        v.attack_param("restarts", v.whole_any),
        target=Target.ATTACK,
    ),
    _option(
        "random_start",
        ("--random-start/--no-random-start",),
        bool | None,
        None,
        "attacks",
        v.flag,
        target=Target.ATTACK,
    ),
    _option("norm", ("--norm",), str | None, None, "attacks", v.attack_param("norm", v.text), target=Target.ATTACK),
    _option(
        "samples",
        ("--samples",),
        int | None,
        None,
        "attacks",
        v.attack_param("samples", v.whole_any),
        target=Target.ATTACK,
    ),
    _option("lr", ("--lr",), float | None, None, "attacks", v.attack_param("lr", v.real), target=Target.ATTACK),
    _option(
        "delta", ("--delta",), float | None, None, "attacks", v.attack_param("delta", v.real), target=Target.ATTACK
    ),
    _option(
        "queries",
        ("--queries",),
        int | None,
        None,
        "attacks",
        v.attack_param("queries", v.whole_any),
        target=Target.ATTACK,
    ),
    _option(
        "eps_max",
        ("--eps-max",),
        str | None,
        None,
        "attacks",
        v.attack_param("eps_max", v.budget),
        target=Target.ATTACK,
    ),
    _option(
        "resolution",
        ("--resolution",),
        str | None,
        None,
        "attacks",
        v.attack_param("resolution", v.budget),
        target=Target.ATTACK,
    ),
    _option("m_grad", ("--m-grad",), str | None, None, "attacks", v.choice(*M_GRAD_CHOICES)),
    _option("sanity", ("--sanity/--no-sanity",), bool, True, "attacks", v.flag),
    _option("transfer", ("--transfer",), bool, False, "attacks", v.flag),
    _option("corruptions", ("--corruption",), str | None, None, "corruptions", v.names),
    _option("severities", ("--severity",), str | None, None, "corruptions", v.severities),
    _option("corruption_source", ("--corruption-root",), Path | None, None, "corruptions", v.path),
    _option(
        "corruption_protocol", ("--corruption-protocol",), str, "auto", "corruptions", v.choice(*_CORRUPTION_PROTOCOLS)
    ),
    _option("collapse", ("--collapse",), bool, False, "collapse", v.flag),
    _option("feature", ("--feature",), str, "residual", "collapse", target=Target.CLI, commands=COLLAPSE),
    _option("no_cls", ("--no-cls",), bool, False, "collapse", target=Target.CLI, commands=COLLAPSE),
    _option("per_head", ("--per-head",), bool, False, "collapse", target=Target.CLI, commands=COLLAPSE),
    _option("layers", ("--layers",), str | None, None, "collapse", target=Target.CLI, commands=COLLAPSE),
    _option(
        "metrics",
        ("--metrics",),
        str,
        "token_cosine,attention_entropy,effective_rank",
        "collapse",
        target=Target.CLI,
        commands=COLLAPSE,
    ),
    _option("seed", ("--seed",), int, 0, "statistics", v.whole(*SEED_RANGE)),
    _option("labels", ("--labels",), str | None, None, "statistics", _labels),
    _option("out", ("--out", "-o"), Path | None, None, "output", v.path, target=Target.RUN, commands=BOTH),
    _option("json", ("--json",), bool, False, "output", target=Target.CLI, commands=BOTH),
    _option("report", ("--report",), bool, False, "output", target=Target.CLI),
    _option("details", ("--details",), bool, False, "output", target=Target.CLI),
    _option("log", ("--log",), list[str], [], "output", v.tracker_targets, target=Target.RUN),
    _option("save_adversarial", ("--save-adversarial",), bool, False, "output", v.flag),
    _option("batch_size", ("--batch-size",), int, 128, "performance", v.whole(1, v.MAX_SIZE), commands=BOTH),
    _option("precision", ("--precision",), str, "fp32", "performance", v.precisions),
    _option("workers", ("--workers",), str, "auto", "performance", v.workers, commands=BOTH),
    _option(
        "memory_budget_gb", ("--memory-budget",), float | None, None, "performance", v.number(0, MAX_MEMORY_GB, "GiB")
    ),
    _option("cache_dir", ("--cache",), Path | None, None, "performance", v.path),
    _option("device", ("--device",), str, "cpu", "performance", v.device, commands=BOTH),
    _option("deterministic", ("--deterministic",), bool, False, "performance", v.flag, commands=BOTH),
)

#: The ``collapse`` command's own readings of options ``eval`` has too.
COLLAPSE_OPTIONS: tuple[Option, ...] = (
    replace(OPTIONS[6], help="Dataset (see `ellrobust datasets`); its test/val split is used.", commands=COLLAPSE),
    replace(
        OPTIONS[9],
        kind=int,
        default=256,
        help=f"Number of images, a seeded subset of the split (all if the split is smaller; {_IMAGES}).",
        commands=COLLAPSE,
    ),
    Option(
        "seed", ("--seed",), int, 0, "Seed for the image subset.", "statistics", v.whole(*SEED_RANGE), commands=COLLAPSE
    ),
    Option(
        "precision",
        ("--precision",),
        str,
        "fp32",
        "Precision of the measuring forward passes: fp32, tf32 or bf16 (clean accuracy stays fp32).",
        "collapse",
        target=Target.CLI,
        commands=COLLAPSE,
    ),
)


def options_of(command: str) -> dict[str, Option]:
    """The options of ``command`` (``eval`` or ``collapse``) by name, in the table's order."""
    return {o.name: o for o in (*OPTIONS, *COLLAPSE_OPTIONS) if command in o.commands}


def python_names() -> dict[str, Option]:
    """The options :func:`ellrobust.evaluate` takes as keywords: ``eval``'s, less the per-model and CLI-only ones."""
    return {
        name: o
        for name, o in options_of("eval").items()
        if not o.per_model and o.target is not Target.CLI and name != "models"
    }
