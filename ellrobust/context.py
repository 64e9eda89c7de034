"""What a run is made of: its request, its units, and the context every stage reads.

These types live apart from :mod:`ellrobust.engine` so that the stages (which need them) and the engine
(which runs the stages) import in one direction only: ``engine → stages → context``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ellrobust.attacks.labels import AttackLabels, parse_labels
from ellrobust.corruptions.protocol import CorruptionProtocol, resolve_protocol
from ellrobust.corruptions.registry import IMAGENET_3DCC
from ellrobust.distributed import DistInfo, batches
from ellrobust.errors import UsageError
from ellrobust.models.base import has_tokens
from ellrobust.parsing import MAX_IMAGES
from ellrobust.precision import Precision, parse_precision
from ellrobust.results import Outcomes, Row

if TYPE_CHECKING:
    from ellrobust.data import LoadedDataset
    from ellrobust.data.store import ImageStore
    from ellrobust.workers import WorkerPool

#: ``--m-grad``: detach (the paper), full (adaptive), or both side by side.
M_GRAD_CHOICES = ("detach", "full", "both")


@dataclass(frozen=True)
class EvalConfig:
    """Everything a run depends on. Frozen: the engine never mutates the request.

    Attributes worth a word:
        precision: the precisions of the attack iterations (``fp32`` by default). Several run side by
            side as separate units; verdicts are always strict fp32 (:mod:`ellrobust.precision`).
        workers: worker processes of the run's one pool (decoding, corruption generation); None picks
            a count for the data (:func:`ellrobust.workers.auto_workers`).
        elliptical_layers: 0-based elliptical blocks: one entry for every elliptical model, or one per
            model in ``models`` order (None keeps a model's default); empty for every model's default.
        memory_budget_gb: the decoded images stay in memory up to this size and go to a memory-mapped
            file beyond it; None takes half of the memory available.
        corruption_protocol: ``imagenet-c`` (with the released files' JPEG round trip), ``imagenet-c-raw``,
            ``cifar-10-c`` or ``auto`` (by image size).
        image_size: ``--img-size``: the side of every image of the run (image folders are resized and
            cropped to it; other datasets have one size); it also states the input size of timm and
            torchvision models, overriding their pretrained configs. None: the dataset's own.
        deterministic: ``--deterministic``: deterministic CUDA kernels, so that the same command on the
            same GPU and software gives the same table bit for bit (:mod:`ellrobust.determinism`).
        heads, mean, std: per-model settings, like ``elliptical_layers`` one for all models (heads:
            for all models whose architecture comes from a checkpoint) or one per model, None for a
            model's own (:meth:`option_for`).
        architectures: what builds each model, one per model in ``models`` order, when it is not
            the model's name: ``ellrobust.evaluate({"ours": "deit-elliptical"})`` names a model
            ``ours`` and builds ``deit-elliptical`` (None: the name itself). Empty, as on the command
            line: every name is what builds it. A model that the caller gives as a module is not in
            the request (:class:`~ellrobust.engine.Evaluation`'s ``modules``); its entry is None.
    """

    models: tuple[str, ...]
    checkpoints: tuple[str | None, ...] = ()
    architectures: tuple[str | None, ...] = ()
    dataset: str = "digits"
    data_root: str | None = None
    split: str | None = None
    n: int | None = None
    seed: int = 0
    batch_size: int = 128
    attacks: tuple = ()  # AttackRequest, ...
    eps: tuple[float, ...] | None = None  # None: the dataset's (or the L2 attack's) defaults
    m_grad: str = "detach"
    precision: tuple[Precision, ...] = (Precision.FP32,)
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    corruption_source: str | None = None  # a precomputed -C folder instead of on-the-fly generation
    corruption_protocol: str = "auto"
    cache_dir: str | None = None
    workers: int | None = None
    memory_budget_gb: float | None = None
    elliptical_layers: tuple[tuple[int, ...] | None, ...] = ()
    image_size: int | None = None
    heads: tuple[int | None, ...] = ()
    mean: tuple[tuple[float, float, float] | None, ...] = ()
    std: tuple[tuple[float, float, float] | None, ...] = ()
    collapse: object | None = None  # a collapse.CollapseConfig, or None
    sanity: bool = True
    device: str = "cpu"
    deterministic: bool = False  # torch's deterministic kernels on CUDA (:mod:`ellrobust.determinism`)
    save_adversarial: bool = False  # every attack unit writes its images (:mod:`ellrobust.results.adversarial`)
    transfer: bool = False  # every attack unit's images are also judged by every other model of the run
    # which images and labels (README "Datasets"): a file of dataset indices or relative paths (with n: the
    # seeded n of them), and an image folder's class numbering in timm's --class-map format
    indices: str | None = None
    class_map: str | None = None
    # --labels: attack the true labels, or each model's clean predictions (:mod:`ellrobust.attacks.labels`)
    labels: str = AttackLabels.TRUE.value

    def __post_init__(self) -> None:
        if not self.models:
            raise UsageError("no model given; pass --model NAME (see `ellrobust models`).")
        if self.architectures and len(self.architectures) != len(self.models):
            count = f"{len(self.architectures)} architectures for {len(self.models)} models"
            raise UsageError(f"{count}; give one per model, in order.")
        if self.checkpoints and len(self.checkpoints) != len(self.models):
            raise UsageError(
                f"{len(self.checkpoints)} --checkpoint for {len(self.models)} --model; give one per model, in order."
            )
        if len(self.elliptical_layers) not in (0, 1, len(self.models)):
            raise UsageError(
                f"{len(self.elliptical_layers)} --elliptical-layers for {len(self.models)} --model; "
                "give one for all models or one per model, in order."
            )
        for flag, values in (("--heads", self.heads), ("--mean", self.mean), ("--std", self.std)):
            if len(values) not in (0, 1, len(self.models)):
                raise UsageError(
                    f"{len(values)} {flag} for {len(self.models)} --model; "
                    "give one for all models or one per model, in order."
                )
        if self.image_size is not None and self.image_size <= 0:
            raise UsageError(f"--img-size must be a positive number of pixels (got {self.image_size}).")
        if len(set(self.models)) != len(self.models):
            raise UsageError("the same --model is given twice; give each model once.")
        if self.transfer and len(self.models) < 2:
            raise UsageError(
                "--transfer judges each model's adversarial images by the other models, and there is only "
                f"{self.models[0]!r}; add a second --model."
            )
        if self.m_grad not in M_GRAD_CHOICES:
            raise UsageError(f"--m-grad must be one of {', '.join(M_GRAD_CHOICES)} (got {self.m_grad!r}).")
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive (got {self.batch_size}).")
        if self.n is not None and self.n <= 0:
            raise UsageError(f"--n must be a positive number of images (got {self.n}).")
        if self.n is not None and self.n > MAX_IMAGES:
            raise UsageError(
                f"--n {self.n} is above the bound of {MAX_IMAGES:,} images; leave --n out to take the whole split."
            )
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers must be 'auto' or a number ≥ 0 (got {self.workers}).")
        if self.memory_budget_gb is not None and self.memory_budget_gb < 0:
            raise UsageError(f"--memory-budget must be ≥ 0 GiB (got {self.memory_budget_gb}).")
        needs_folder = [name for name in self.corruptions if name in IMAGENET_3DCC]
        if needs_folder and self.corruption_source is None:
            raise UsageError(
                f"{needs_folder[0]!r} is an ImageNet-3DCC corruption, made from each image's depth, and cannot be "
                "generated; pass --corruption-root with the ImageNet-3DCC folder."
            )
        protocols = [p.value for p in CorruptionProtocol]
        if self.corruption_protocol not in protocols:
            raise UsageError(
                f"--corruption-protocol must be one of {', '.join(protocols)} (got {self.corruption_protocol!r})."
            )
        object.__setattr__(self, "labels", parse_labels(self.labels).value)
        minimal = [a.name for a in self.attacks if a.definition.is_minimal]
        if self.labels == AttackLabels.PREDICTED and minimal:
            raise UsageError(
                f"--labels predicted applies to fixed-budget attacks; {minimal[0]} measures ε* against the true "
                "labels only: drop it or use --labels true."
            )
        precisions = tuple(dict.fromkeys(parse_precision(p) for p in self.precision))
        if not precisions:
            raise UsageError("--precision is empty; choose among fp32, tf32, bf16.")
        object.__setattr__(self, "precision", precisions)

    def to_dict(self) -> dict:
        """The request as plain JSON-ready data (what run.json records and the default --out hashes)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("attacks", "collapse")}
        if not self.architectures:
            del out["architectures"]  # absent when every name builds itself: the CLI's run folders keep their names
        for name in ("indices", "class_map"):
            if out[name] is None:
                del out[name]  # absent when not asked for: run folders keep their names
        out["attacks"] = [{"name": a.name, "params": dict(a.params), "eps": a.eps} for a in self.attacks]
        out["collapse"] = collapse_key(self.collapse)
        return json.loads(json.dumps(out, default=str))

    def folder_key(self) -> dict:
        """What the name of a default run folder hashes: :meth:`to_dict`, less ``labels`` at its default.

        run.json records the labels always; the name leaves the default out so that a request of an
        earlier release (which had no ``labels``) keeps its folder and resumes there.
        """
        out = self.to_dict()
        if out.get("labels") == AttackLabels.TRUE.value:
            del out["labels"]
        return out

    def architecture(self, index: int) -> str:
        """The name that builds the ``index``-th model (:attr:`architectures`, else the model's name)."""
        return (self.architectures[index] if self.architectures else None) or self.models[index]

    def layers_for(self, index: int, elliptical: bool) -> tuple[int, ...] | None:
        """The ``--elliptical-layers`` of the ``index``-th model (None: its architecture's default)."""
        if len(self.elliptical_layers) == 1 and len(self.models) > 1:
            return self.elliptical_layers[0] if elliptical else None
        return self.elliptical_layers[index] if self.elliptical_layers else None

    def option_for(self, option: str, index: int, applies: bool = True):
        """A per-model option (``heads``, ``mean``, ``std``) of the ``index``-th model, None for its own.

        Given once, it goes to every model it ``applies`` to; given once per model, each model has
        its own, and a model it does not apply to must have ``-``.
        """
        values = getattr(self, option)
        if not values:
            return None
        if len(values) == 1 and len(self.models) > 1:
            return values[0] if applies else None
        return values[index]

    def m_grad_modes(self, elliptical: bool) -> tuple[str, ...]:
        """A baseline model has no metric to differentiate through: it runs once, with m_grad ''."""
        if not elliptical:
            return ("",)
        return ("detach", "full") if self.m_grad == "both" else (self.m_grad,)


def collapse_key(collapse: object | None) -> object:
    """A collapse config as JSON-ready data (for run.json and unit identities)."""
    return json.loads(json.dumps(asdict(collapse), default=str)) if collapse is not None else None


@dataclass
class LoadedModel:
    """A model of the run: any :class:`~ellrobust.models.base.Classifier` (ellrobust's ViT, a timm or
    torchvision model)."""

    name: str
    module: nn.Module
    digest: str
    weights: str  # where the weights came from: a file, a shipped checkpoint, or a seeded initialisation

    @property
    def elliptical(self) -> bool:
        return bool(self.module.is_elliptical)

    @property
    def tokens(self) -> bool:
        """Whether the collapse probe can read the model's tokens."""
        return has_tokens(self.module)

    def architecture(self) -> dict:
        """The model's architecture as JSON-ready data: part of every unit's identity and of run.json.

        The weights' digest alone does not identify a model: the same weights with other elliptical
        layers compute other logits, and another library's model names its library and architecture.
        """
        return self.module.describe()


@dataclass(frozen=True)
class Unit:
    """One saved piece of work. ``model`` is ``"*"`` for units that cover every model at once."""

    stage: str
    model: str
    method: str
    params: str = "{}"
    eps: float | None = None
    severity: int | None = None
    m_grad: str = ""
    prior: tuple[float, ...] = ()  # smaller budgets of the same attack run before this one (nested eps)
    precision: str = ""  # the attack iterations' precision; "" where it does not apply

    @property
    def label(self) -> str:
        parts = [self.model, self.method]
        if self.eps is not None:
            parts.append(f"eps={self.eps * 255:.3g}/255")
        if self.severity is not None:
            parts.append(f"s{self.severity}")
        if self.m_grad:
            parts.append(f"m_grad={self.m_grad}")
        if self.precision and self.precision != Precision.FP32:
            parts.append(self.precision)
        return " ".join(parts)


@dataclass
class UnitResult:
    """Rows (the engine adds provenance), per-example outcomes and values, and diagnostics.

    Attributes:
        rows: the unit's typed rows (:class:`~ellrobust.results.rows.Row`).
        outcomes: per model, one 0/1 per selected image (correct / robust).
        values: per-image measurements other than correctness (collapse metrics), keyed by a name
            the producing stage chooses; one float per image the unit measured.
        extra: diagnostics for run.json and the sanity checks (timings, perturbation sizes).
        predictions: per model, the class predicted for each selected image (as ``outcomes``).
        linf, l2: per attacked model, the size of each selected image's perturbation.
        transfer, transfer_predictions: with ``--transfer``, per other model of the run, whether it
            classifies the attacked model's adversarial images correctly, and what it predicts.
        eps_star, censored: per model of a minimal-norm unit, each selected image's minimal budget ε*
            (0 for an image misclassified clean, ``eps_max`` when censored) and whether it is censored.
            Such a unit's outcomes are those of the budgets in ``extra["eps_grid"]`` (the run's grid for
            the method, set when the run reads the unit: :meth:`ellrobust.stages.minimal.MinimalStage.finish`).
        confidence, top5: per model of a clean or corruption unit, each selected image's max-softmax
            confidence and top-5 hit (:mod:`ellrobust.metrics.calibration`).
    """

    rows: list[Row] = field(default_factory=list)
    outcomes: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    predictions: dict[str, list[int]] = field(default_factory=dict)
    linf: dict[str, list[float]] = field(default_factory=dict)
    l2: dict[str, list[float]] = field(default_factory=dict)
    transfer: dict[str, list[int]] = field(default_factory=dict)
    transfer_predictions: dict[str, list[int]] = field(default_factory=dict)
    eps_star: dict[str, list[float]] = field(default_factory=dict)
    censored: dict[str, list[int]] = field(default_factory=dict)
    confidence: dict[str, list[float]] = field(default_factory=dict)
    top5: dict[str, list[int]] = field(default_factory=dict)

    def outcomes_of(self, unit: Unit) -> list[Outcomes]:
        """The unit's per-example outcomes as typed records, one per model, in the unit's measurement;
        transferred ones in the measurement :func:`transfer_params` names.

        A minimal-norm unit gives one per model and budget of its grid: robust at ε when ε* > ε
        (:func:`ellrobust.metrics.minimal.robust_flags`), each carrying the images' ε* and censoring.
        """
        if self.eps_star:
            return self._minimal_outcomes(unit)
        transferred = [
            Outcomes(
                target,
                unit.method,
                transfer_params(unit),
                unit.eps,
                None,
                "",
                unit.precision,
                np.asarray(vals, dtype=bool),
                self.transfer_predictions.get(target),
            )
            for target, vals in self.transfer.items()
        ]
        return transferred + [
            Outcomes(
                model,
                unit.method,
                unit.params,
                unit.eps,
                unit.severity,
                unit.m_grad,
                unit.precision,
                np.asarray(vals, dtype=bool),
                self.predictions.get(model),
                self.linf.get(model),
                self.l2.get(model),
                confidence=self.confidence.get(model),
                top5=self.top5.get(model),
            )
            for model, vals in self.outcomes.items()
        ]

    def _minimal_outcomes(self, unit: Unit) -> list[Outcomes]:
        from ellrobust.metrics.minimal import robust_flags

        grid = [float(e) for e in self.extra.get("eps_grid", [])]
        eps_max = float(self.extra["eps_max"])
        out = []
        for model, stars in self.eps_star.items():
            censored = np.asarray(self.censored[model], dtype=bool)
            flags = robust_flags(np.asarray(stars, dtype=float), censored, grid, eps_max=eps_max)
            out += [
                Outcomes(
                    model,
                    unit.method,
                    unit.params,
                    eps,
                    None,
                    unit.m_grad,
                    unit.precision,
                    robust,
                    eps_star=np.asarray(stars, dtype=float),
                    censored=censored,
                )
                for eps, robust in zip(grid, flags, strict=True)
            ]
        return out


@dataclass(frozen=True)
class ProgressEvent:
    kind: str  # "start", "advance", "end"
    label: str
    total: int = 0
    advance: int = 0
    cached: bool = False


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    return None


@dataclass(frozen=True)
class Batch:
    """One batch of a unit: its positions in the selection, images and labels on the device, and its seed.

    The seed is the unit's seed plus the batch's index in the fixed cut of the unit's images, so a
    batch's random numbers (random starts, SPSA's directions) are the same whichever rank runs it and
    whatever ran before it.
    """

    positions: list[int]
    images: torch.Tensor
    labels: torch.Tensor
    seed: int


@dataclass
class RunContext:
    """What every stage sees: the request, the data, the models, and the units finished so far.

    Stages read images through :meth:`batches` and collect per-position results with :meth:`gather`:
    both work the same in one process and under ``torchrun`` (see :mod:`ellrobust.distributed`).
    Images come from the run's :class:`~ellrobust.data.store.ImageStore` (decoded once per run) and
    heavy per-image work goes to the run's one :class:`~ellrobust.workers.WorkerPool`.
    """

    config: EvalConfig
    data: LoadedDataset
    indices: list[int]
    models: dict[str, LoadedModel]
    progress: ProgressFn
    dist: DistInfo = field(default_factory=DistInfo)
    store: ImageStore | None = None
    pool: WorkerPool | None = None
    results: dict[Unit, UnitResult] = field(default_factory=dict)  # every unit finished so far
    run_dir: Path | None = None  # where units write files beside their rows (--save-adversarial)
    # Out-of-distribution images (imagenet-o): their dataset indices, stored after the selection, at
    # store positions len(indices) onwards; only the OOD stage reads them (every other stage reads
    # the selection, the in-distribution images).
    ood_indices: list[int] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.dist.device(self.config.device))

    @functools.cached_property
    def indices_digest(self) -> str:
        """A hash of the selected dataset indices (part of every unit's identity), computed once.

        With OOD images their indices count too (absent otherwise: keys unchanged).
        """
        h = hashlib.sha256(np.asarray(self.indices, dtype=np.int64).tobytes())
        if self.ood_indices:
            h.update(b"ood:" + np.asarray(self.ood_indices, dtype=np.int64).tobytes())
        return h.hexdigest()

    @property
    def image_size(self) -> int:
        """The side of the stored images (the dataset's nominal size before the store exists)."""
        return int(self.store.image_shape[-1]) if self.store is not None else self.data.spec.image_size

    @property
    def corruption_protocol(self) -> str:
        """``imagenet-c``, ``imagenet-c-raw`` or ``cifar-10-c``: the request's choice, ``auto`` resolved by size."""
        return resolve_protocol(self.config.corruption_protocol, self.image_size).value

    def clean_outcomes(self, model: str) -> np.ndarray:
        """Which images ``model`` classifies correctly (the clean stage's unit; it runs before any other)."""
        return np.asarray(self.results[clean_unit(model)].outcomes[model], dtype=bool)

    def owned_batches(self, positions: list[int] | None = None) -> list[tuple[int, list[int]]]:
        """This rank's ``(batch index, positions)`` of ``positions`` (0-based in the selection; None: all).

        The cut into batches is the same in every process layout; batch ``b`` belongs to rank
        ``b % world_size``.
        """
        positions = list(range(len(self.indices))) if positions is None else list(positions)
        return [(b, chunk) for b, chunk in enumerate(batches(positions, self.config.batch_size)) if self.dist.owns(b)]

    def batches(self, positions: list[int] | None, label: str, seed: int) -> Iterator[Batch]:
        """This rank's batches of ``positions`` (0-based within the selection; None: all of them).

        Yields :class:`Batch` es read from the image store, on the device. The global RNG is seeded
        with each batch's seed (``seed`` + its index) before the batch is yielded, for code that draws
        from it (torchattacks' random starts). Emits progress events for ``label``.
        """
        mine = self.owned_batches(positions)
        self.progress(ProgressEvent("start", label, total=len(mine)))
        for b, chunk in mine:
            seed_everything(seed + b)
            x, y = self.store.batch(chunk, self.device)
            yield Batch(chunk, x, y, (seed + b) & 0x7FFFFFFF)
            self.progress(ProgressEvent("advance", label, advance=1))
        self.progress(ProgressEvent("end", label))

    def gather(self, values: dict[int, float], size: int | None = None, dtype=np.float64) -> np.ndarray:
        """Per-position values from every rank as one array over the selection (or ``size``)."""
        return self.dist.gather_values(values, len(self.indices) if size is None else size, dtype)

    def eps_for(self, request) -> tuple[float, ...]:
        if request.eps is not None:
            return request.eps
        if self.config.eps is not None:
            return self.config.eps
        return request.default_eps or self.data.spec.default_eps


def transfer_params(unit: Unit) -> str:
    """The params of a transferred measurement: the attack's, plus the model it attacked (``source``) and,
    for an elliptical source, its ``source_m_grad``.

    The target takes no gradient, so its own m_grad does not apply (its rows' ``m_grad`` is empty); the
    source is part of the params so that the images of different sources are different measurements,
    and two targets judged on the same source's images pair up image by image.
    """
    params = json.loads(unit.params)
    params["source"] = unit.model
    if unit.m_grad:
        params["source_m_grad"] = unit.m_grad
    return json.dumps(params, sort_keys=True)


def clean_unit(model: str) -> Unit:
    """The clean-accuracy unit of ``model``: its outcomes decide which images the attacks attack."""
    return Unit("clean", model, "clean")


def unit_seed(base_seed: int, key: str) -> int:
    """A per-unit seed derived from the run seed and the unit's key (stable across resumes)."""
    return (int(key[:8], 16) ^ base_seed) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
