"""RobustBench's model zoo: ``-m robustbench:DATASET/THREAT/NAME --model-dir DIR``, nothing downloaded.

The name is the leaderboard's (``robustbench:cifar10/Linf/Wong2020Fast``); the weights are the file
RobustBench's ``load_model`` would have downloaded, where it keeps it:
``DIR/<dataset>/<threat model>/<name>.pt`` (``--model-dir``, RobustBench's default ``./models``).
The ``robustbench`` package (an optional extra) builds the entry's architecture; ellrobust reads the
file with its safe reader (weights only) and loads it strictly, after the same key clean-up as
RobustBench (``module.``/``model.`` prefixes). The one laxity is RobustBench's own: a checkpoint may
lack the normalisation constants (``mu``/``sigma``, ``mean``/``std``) that the architecture sets itself.

RobustBench's models take [0, 1] images and normalise inside, so ellrobust adds no normalisation
(``--mean``/``--std`` are refused). Ensembles and entries whose weights come from elsewhere (timm or
torchvision downloads) are refused by name.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from ellrobust.core.errors import UsageError
from ellrobust.models.checkpoint import load_strict, read_checkpoint
from ellrobust.models.external import PREFIXES, ExternalClassifier, ExternalRequest, ModelPrefix

#: RobustBench's default ``model_dir``.
DEFAULT_MODEL_DIR = "models"
#: Each benchmark dataset's classes and image side (RobustBench's ImageNet models take 224 px crops).
DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet": (1000, 224)}
#: Buffers of the normalisation that RobustBench's architectures set themselves (its ``_safe_load_state_dict``).
NORMALISATION_BUFFERS = ("mu", "sigma", "mean", "std")


class ZooClassifier(ExternalClassifier):
    """A RobustBench model behind ellrobust's contract: it takes [0, 1] images already, so no normalisation."""

    def __init__(self, net: nn.Module, *, name: str, input_size: int, num_classes: int) -> None:
        super().__init__(
            net,
            library="robustbench",
            name=name,
            mean=(0.0,) * 3,
            std=(1.0,) * 3,
            input_size=input_size,
            num_classes=num_classes,
        )
        self.normalize = nn.Identity()

    def describe(self) -> dict:
        out = {k: v for k, v in super().describe().items() if k not in ("mean", "std")}
        return {**out, "normalisation": "the zoo model's own, on [0, 1] images"}


def _zoo():
    """RobustBench's ``model_dicts`` and enums, imported on first use (the package is an optional extra)."""
    try:
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as exc:
        raise UsageError(
            f"robustbench models need the robustbench package, which could not be imported ({exc}): "
            "pip install 'ellrobust[robustbench]'."
        ) from None
    return model_dicts, BenchmarkDataset, ThreatModel


def parse_name(name: str) -> tuple[str, str, str]:
    """``DATASET/THREAT/NAME`` -> its three parts (``corruptions_3d`` models live under ``corruptions``)."""
    parts = name.split("/")
    if len(parts) != 3 or not all(parts):
        raise UsageError(
            f"model 'robustbench:{name}' is not DATASET/THREAT/NAME; write e.g. 'robustbench:cifar10/Linf/Standard'."
        )
    dataset, threat, entry = parts
    if dataset not in DATASETS:
        raise UsageError(f"robustbench dataset {dataset!r} is unknown; choose among {', '.join(DATASETS)}.")
    return dataset, threat.replace("_3d", ""), entry


def weights_path(req: ExternalRequest) -> Path:
    """Where RobustBench keeps the entry's weights: ``model_dir/<dataset>/<threat model>/<name>.pt``."""
    dataset, threat, entry = parse_name(req.name)
    return Path(req.model_dir or DEFAULT_MODEL_DIR) / dataset / threat / f"{entry}.pt"


def _entry(name: str) -> dict:
    """The zoo's entry (its ``model`` constructor and ``gdrive_id``); unknown parts are one line each."""
    model_dicts, BenchmarkDataset, ThreatModel = _zoo()
    dataset, threat, entry = parse_name(name)
    threats = model_dicts[BenchmarkDataset(dataset)]
    by_value = {t.value: t for t in threats}
    if threat not in by_value:
        raise UsageError(f"robustbench has no {threat!r} models for {dataset}; choose among {', '.join(by_value)}.")
    entries = threats[by_value[threat]]
    if entry not in entries:
        close = difflib.get_close_matches(entry, list(entries), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"robustbench has no {dataset}/{threat} model {entry!r}.{hint}")
    found = entries[entry]
    if isinstance(found.get("gdrive_id"), list):
        raise UsageError(f"robustbench model {name!r} is an ensemble of several files; ellrobust loads single models.")
    if not found.get("gdrive_id"):
        raise UsageError(
            f"robustbench model {name!r} has no weights file in the zoo (RobustBench downloads them from timm or "
            "torchvision); evaluate it with -m timm:NAME or -m torchvision:NAME and a local checkpoint."
        )
    return found


def _robustbench_keys(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RobustBench's key clean-up: ``module.`` and ``model.`` prefixes removed, ``model.`` put back where the
    architecture wraps its network in ``model`` (its ImageNet models), and the normalisation constants
    the architecture sets itself filled in when the checkpoint lacks them."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            key = key.removeprefix(prefix)
        out[key] = value
    if own and all(k.startswith("model.") for k in own) and not any(k.startswith("model.") for k in out):
        out = {f"model.{k}": v for k, v in out.items()}
    fill = {k: v for k, v in own.items() if k not in out and k.rsplit(".", 1)[-1] in NORMALISATION_BUFFERS}
    return {**fill, **out}


def build_robustbench(req: ExternalRequest) -> nn.Module:
    """A RobustBench zoo entry with its weights from ``--model-dir`` (see the module's docstring)."""
    label = f"robustbench:{req.name}"
    if req.checkpoint is not None or req.mean is not None or req.std is not None:
        flag = "--checkpoint" if req.checkpoint is not None else "--mean/--std"
        raise UsageError(
            f"model {label!r}: {flag} does not apply: its weights come from --model-dir and it normalises "
            "[0, 1] images itself."
        )
    path = weights_path(req)
    if not path.is_file():
        raise UsageError(
            f"model {label!r}: no weights at {str(path)!r} (RobustBench's layout under --model-dir, "
            f"default ./{DEFAULT_MODEL_DIR}); put the zoo's file there, nothing is downloaded."
        )
    dataset = parse_name(req.name)[0]
    classes, side = DATASETS[dataset]
    if req.num_classes is not None and req.num_classes != classes:
        raise UsageError(
            f"model {label!r} classifies {classes} classes ({dataset}) but the run's dataset has {req.num_classes}."
        )
    net = _entry(req.name)["model"]()
    state, _ = read_checkpoint(path)
    load_strict(
        net,
        _robustbench_keys(state, net.state_dict()),
        source=f"robustbench weights {str(path)!r}",
        fix=f"Check that the file is {label}'s.",
    )
    model = ZooClassifier(net, name=req.name, input_size=req.img_size or side, num_classes=classes)
    return model.eval()


PREFIXES.add(
    "robustbench",
    ModelPrefix(
        "robustbench",
        "a RobustBench zoo entry, DATASET/THREAT/NAME, weights read from --model-dir in RobustBench's layout "
        "(pip install 'ellrobust[robustbench]')",
        "-m robustbench:cifar10/Linf/Standard --model-dir ./models",
        build_robustbench,
        weights=lambda req: str(weights_path(req)),
    ),
)
