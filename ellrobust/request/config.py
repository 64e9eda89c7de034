"""The request: everything a run depends on, as one frozen value (what run.json records).

It lives below the measures and the engine, which read it; the CLI, the suites and
:func:`ellrobust.evaluate` build it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ellrobust.attacks.patches import PATCH_NORM
from ellrobust.attacks.target_labels import AttackLabels, parse_labels
from ellrobust.core.errors import UsageError
from ellrobust.core.precision import Precision, parse_precision
from ellrobust.corruptions.catalog import IMAGENET_3DCC


@dataclass(frozen=True)
class EvalConfig:
    """Everything a run depends on. Frozen: the engine never mutates the request.

    Attributes worth a word:
        precision: the precisions of the attack iterations (``fp32`` by default). Several run side by
            side as separate units; verdicts are always strict fp32 (:mod:`ellrobust.core.precision`).
        workers: worker processes of the run's one pool (decoding, corruption generation); None picks
            a count for the data (:func:`ellrobust.core.workers.auto_workers`).
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
            same GPU and software gives the same table bit for bit (:mod:`ellrobust.core.determinism`).
        heads, mean, std: per-model settings, like ``elliptical_layers`` one for all models (heads:
            for all models whose architecture comes from a checkpoint) or one per model, None for a
            model's own (:meth:`option_for`).
        architectures: what builds each model, one per model in ``models`` order, when it is not
            the model's name: ``ellrobust.evaluate({"ours": "deit-elliptical"})`` names a model
            ``ours`` and builds ``deit-elliptical`` (None: the name itself). Empty, as on the command
            line: every name is what builds it. A model that the caller gives as a module is not in
            the request (:class:`~ellrobust.engine.runner.Evaluation`'s ``modules``); its entry is None.
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
    patches: tuple[float, ...] | None = None  # the patch attacks' budgets in patches; None: theirs (1, 2, 4)
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
    model_dir: str | None = None  # --model-dir: a model zoo's weights folder (robustbench:NAME), RobustBench's layout
    collapse: object | None = None  # a collapse.CollapseConfig, or None
    sanity: bool = True
    device: str = "cpu"
    deterministic: bool = False  # torch's deterministic kernels on CUDA (:mod:`ellrobust.core.determinism`)
    save_adversarial: bool = False  # every attack unit writes its images (:mod:`ellrobust.results.adversarial_images`)
    transfer: bool = False  # every attack unit's images are also judged by every other model of the run
    # which images and labels (README "Datasets"): a file of dataset indices or relative paths (with n: the
    # seeded n of them), and an image folder's class numbering in timm's --class-map format
    indices: str | None = None
    class_map: str | None = None
    # --labels: attack the true labels, or each model's clean predictions (:mod:`ellrobust.attacks.target_labels`)
    labels: str = AttackLabels.TRUE.value

    def __post_init__(self) -> None:
        """Check what concerns several fields at once, and normalise labels and precisions.

        Each field's own type and bounds are checked where it comes in, by its option in the request
        spec (:mod:`ellrobust.request.spec`: the command line, :func:`ellrobust.evaluate` and suites).
        """
        self._check_models()
        self._check_combinations()
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

    def _check_models(self) -> None:
        """One model each, and per-model settings given once for all or once per model."""
        if not self.models:
            raise UsageError("no model given; pass --model NAME (see `ellrobust models`).")
        if len(set(self.models)) != len(self.models):
            raise UsageError("the same --model is given twice; give each model once.")
        if self.architectures and len(self.architectures) != len(self.models):
            count = f"{len(self.architectures)} architectures for {len(self.models)} models"
            raise UsageError(f"{count}; give one per model, in order.")
        if self.checkpoints and len(self.checkpoints) != len(self.models):
            raise UsageError(
                f"{len(self.checkpoints)} --checkpoint for {len(self.models)} --model; give one per model, in order."
            )
        per_model = {
            "--elliptical-layers": self.elliptical_layers,
            "--heads": self.heads,
            "--mean": self.mean,
            "--std": self.std,
        }
        for flag, values in per_model.items():
            if len(values) not in (0, 1, len(self.models)):
                raise UsageError(
                    f"{len(values)} {flag} for {len(self.models)} --model; "
                    "give one for all models or one per model, in order."
                )

    def _check_combinations(self) -> None:
        """Options that need another: --transfer a second model, --patches a patch attack, ImageNet-3DCC a folder."""
        if self.transfer and len(self.models) < 2:
            raise UsageError(
                "--transfer judges each model's adversarial images by the other models, and there is only "
                f"{self.models[0]!r}; add a second --model."
            )
        if self.patches and not any(a.norm == PATCH_NORM for a in self.attacks):
            raise UsageError(
                "--patches sets the budgets of the patch attacks and none is asked for; add one "
                "(--attack patch-fool) or drop --patches."
            )
        needs_folder = [name for name in self.corruptions if name in IMAGENET_3DCC]
        if needs_folder and self.corruption_source is None:
            raise UsageError(
                f"{needs_folder[0]!r} is an ImageNet-3DCC corruption, made from each image's depth, and cannot be "
                "generated; pass --corruption-root with the ImageNet-3DCC folder."
            )

    def to_dict(self) -> dict:
        """The request as plain JSON-ready data: what run.json records and what a default run folder's name hashes."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("attacks", "collapse")}
        out["attacks"] = [{"name": a.name, "params": dict(a.params), "eps": a.eps} for a in self.attacks]
        out["collapse"] = collapse_key(self.collapse)
        return json.loads(json.dumps(out, default=str))

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
