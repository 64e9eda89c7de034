"""Representation collapse per layer: token cosine similarity, attention entropy, effective rank.

The claim under test: elliptical attention keeps token representations apart where standard
attention smooths them into one vector layer after layer. For each selected layer this measures,
on a batch of images,

* ``token_cosine``: mean pairwise cosine similarity between tokens (the paper's measure),
* ``attention_entropy``: entropy of the attention rows, averaged over query tokens and heads,
* ``effective_rank``: effective rank of the token matrix (Roy & Vetterli 2007),
* ``elliptical_m_mean`` and ``elliptical_m_spread`` (elliptical layers only): the mean and the
  standard deviation, over the head's coordinates, of the metric ``m`` elliptical attention scales
  its queries by (max-scaled to (0, 1]: 1 everywhere is standard attention, small values a strongly
  stretched ellipse), averaged over heads; on clean images (``collapse`` rows) and on each attack's
  adversarial images, so a reader sees what the attack does to the quantity the method rests on,

and sums them per image so that an accumulator can average over any number of batches.

Features come from ``iter_blocks``, the explicit, streaming feature API of every model with
tokens (:class:`~ellrobust.models.base.TokenModel`: ellrobust's ViT, timm's VisionTransformers): no
hooks, no state left on modules, nothing retained after a batch. Models without tokens (CNNs) have
no collapse to measure: a run measures the models that have tokens (:func:`token_models`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F

from ellrobust.core.errors import UsageError
from ellrobust.core.precision import Precision, parse_precision, precision_scope
from ellrobust.models.base import TokenModel, has_tokens
from ellrobust.results import COLLAPSE_METRICS, Metric, Row, declare_column
from ellrobust.stats.collapse_metrics import (
    attention_entropy_qk,
    effective_rank,
    effective_rank_from_gram,
    token_cosine,
    token_gram,
)
from ellrobust.stats.inference import mean_interval


class Feature(StrEnum):
    """Which tokens of a block are measured."""

    RESIDUAL = "residual"  # the residual stream after the block: what the next layer sees
    ATTENTION = "attention"  # the attention branch output: what the research code measured


@dataclass(frozen=True)
class CollapseConfig:
    """What to measure. Frozen: it is part of a unit's identity, so resumed runs stay consistent.

    Attributes:
        feature: the residual stream after each block, or the attention branch output.
        include_cls: keep the class token among the tokens (the paper does). Without it, the prefix
            tokens (class, and distillation or register tokens where a model has them) are left out,
            and attention entropy is averaged over the patch queries only (keys always include
            every token, since each attention row is a distribution over all of them).
        per_head: also report every head separately (attention feature only). A head's tokens are
            its output before the output projection, ``softmax(q kᵀ/√d) v``: after the projection the
            heads are mixed and no longer separable.
        layers: 0-based blocks to measure; None for all of them.
        metrics: which metrics to compute. Token cosine alone is nearly free on top of a forward
            pass; attention entropy reuses the forward pass's q and k (one more ``q kᵀ``, fused on
            CPU) and effective rank needs a float64 spectrum per image and layer, which dominates
            the cost of the full set (benchmarks/bench_collapse.py).
        precision: the precision of the measuring forward passes (``ellrobust collapse
            --precision``); the metrics themselves are computed in strict float32 from the features.
    """

    feature: Feature = Feature.RESIDUAL
    include_cls: bool = True
    per_head: bool = False
    layers: tuple[int, ...] | None = None
    metrics: tuple[Metric, ...] = COLLAPSE_METRICS
    precision: Precision = Precision.FP32

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", parse_precision(self.precision))
        try:
            object.__setattr__(self, "feature", Feature(self.feature))
        except ValueError:
            choices = ", ".join(f.value for f in Feature)
            raise UsageError(f"--feature must be one of {choices} (got {self.feature!r}).") from None
        if self.per_head and self.feature is not Feature.ATTENTION:
            raise UsageError("--per-head needs --feature attention: the residual stream has no heads.")
        if self.layers is not None:
            if not self.layers:
                raise UsageError("--layers is empty; give 0-based block indices, e.g. --layers 0,3,5.")
            negative = sorted(i for i in self.layers if i < 0)
            if negative:
                raise UsageError(f"--layers {negative} are negative; block indices start at 0.")
            object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        choices = ", ".join(m.value for m in COLLAPSE_METRICS)
        try:
            metrics = tuple(dict.fromkeys(Metric(m) for m in self.metrics))
            if not set(metrics) <= set(COLLAPSE_METRICS):
                raise ValueError
        except ValueError:
            raise UsageError(f"--metrics must be among {choices} (got {', '.join(map(str, self.metrics))}).") from None
        if not metrics:
            raise UsageError(f"--metrics is empty; choose among {choices}.")
        object.__setattr__(self, "metrics", metrics)

    def resolve_layers(self, depth: int, model: str = "the model") -> tuple[int, ...]:
        """The layers to measure in a model of ``depth`` blocks; raises if one does not exist."""
        if self.layers is None:
            return tuple(range(depth))
        bad = [i for i in self.layers if i >= depth]
        if bad:
            raise UsageError(
                f"--layers {bad} out of range for {model} ({depth} blocks): valid layers are 0–{depth - 1}."
            )
        return self.layers

    def row_params(self, head: int | None = None) -> dict[str, object]:
        """The ``params`` of a result row: what the number depends on besides model and layer."""
        params: dict[str, object] = {"feature": self.feature.value, "cls": self.include_cls}
        if head is not None:
            params["head"] = head
        return params

    def unit_params(self) -> str:
        """JSON of the whole config: a unit's identity, so changing any setting re-runs the unit."""
        layers = list(self.layers) if self.layers is not None else None
        metrics = [m.value for m in self.metrics]
        unit = {
            **self.row_params(),
            "per_head": self.per_head,
            "layers": layers,
            "metrics": metrics,
            "precision": self.precision.value,
        }
        return json.dumps(unit, sort_keys=True)


@dataclass(frozen=True)
class MetricKey:
    """One number per image: a metric of one layer, for all heads together (``head`` None) or one."""

    metric: Metric
    layer: int
    head: int | None = None


def value_key(metric: str, layer: int | None, head: int | None = None) -> str:
    """The name of a per-image value series in a unit result: ``token_cosine|3|``, ``token_cosine|later|``.

    ``layer`` None names the mean over the later half of the measured layers (the summary), whatever
    the depth, so models of different depths pair on it.
    """
    return f"{metric}|{'later' if layer is None else layer}|{'' if head is None else head}"


for _metric in COLLAPSE_METRICS:
    declare_column(
        _metric.value, np.float64, f"{_metric} of the image at one layer (and head): see value_key", family=True
    )


def parse_value_key(key: str) -> tuple[str, int | None, int | None]:
    """(metric, layer, head) of a :func:`value_key`."""
    metric, where, head = key.split("|")
    return metric, None if where == "later" else int(where), int(head) if head else None


def later_half(layers: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """The measured layers in the later half of a model of ``depth`` blocks (the paper's collapse claim)."""
    return tuple(i for i in layers if i >= depth // 2)


@torch.no_grad()
def collapse_metrics(
    model: TokenModel, images: torch.Tensor, config: CollapseConfig, layers: tuple[int, ...]
) -> dict[MetricKey, torch.Tensor]:
    """Collapse metrics of one batch, per image.

    The blocks run in ``config.precision``, one at a time (:meth:`TokenModel.iter_blocks`): each block
    is measured as soon as it exists and let go, so no more than one block's tensors are alive, as in
    a forward pass, and no block after the last measured layer runs. The metrics themselves are
    computed in strict float32 (an fp32 scope, which also switches off any autocast around the call),
    whatever precision the blocks ran in. Effective rank keeps only each measured layer's Gram matrix
    and solves them all in one batched call at the end.

    Runs under ``no_grad`` (safe to call on adversarial images that still carry a graph) and keeps
    nothing after it returns.

    Args:
        model: the model, in eval mode.
        images: [0, 1] images, (B, 3, S, S).
        config: what to measure.
        layers: valid block indices, from :meth:`CollapseConfig.resolve_layers`.

    Returns:
        A (B,) tensor per :class:`MetricKey`, layer by layer.
    """
    first = 0 if config.include_cls else model.num_prefix_tokens  # the class (and other prefix) tokens come first
    measured = set(layers)
    out: dict[MetricKey, torch.Tensor] = {}
    grams: list[torch.Tensor] = []
    for layer, block in enumerate(_blocks(model, images, config.precision, last=max(layers))):
        if layer in measured:
            with precision_scope(Precision.FP32, images.device):
                _measure_block(out, grams, block, layer, config, first)
    if grams:
        ranks = effective_rank_from_gram(torch.cat(grams)).view(len(layers), -1)  # (L, B)
        for i, layer in enumerate(layers):
            out[MetricKey(Metric.EFFECTIVE_RANK, layer)] = ranks[i]
    return dict(sorted(out.items(), key=_row_order))


def _measure_block(
    out: dict[MetricKey, torch.Tensor], grams: list[torch.Tensor], block, layer: int, config: CollapseConfig, first: int
) -> None:
    """One measured block's metrics into ``out``; its Gram matrix (effective rank) into ``grams``."""
    wanted = set(config.metrics)
    tokens = (block.x if config.feature is Feature.RESIDUAL else block.attn_out)[:, first:]  # (B, N', C)
    heads = None
    if config.per_head:
        # Head outputs before the projection, softmax(q kᵀ/√D) v: (B·H, N', D).
        heads = F.scaled_dot_product_attention(block.q.float(), block.k.float(), block.v.float())[:, :, first:].flatten(
            0, 1
        )
    if Metric.TOKEN_COSINE in wanted:
        out[MetricKey(Metric.TOKEN_COSINE, layer)] = token_cosine(tokens)  # (B,)
        if heads is not None:
            _split_heads(out, Metric.TOKEN_COSINE, layer, token_cosine(heads).view(block.q.shape[:2]))
    if Metric.EFFECTIVE_RANK in wanted:
        grams.append(token_gram(tokens))  # (B, k, k): solved with every other layer's at the end
        if heads is not None:
            _split_heads(out, Metric.EFFECTIVE_RANK, layer, effective_rank(heads).view(block.q.shape[:2]))
    if block.m is not None:
        _measure_m(out, block.m, layer, wanted, config.per_head)
    if Metric.ATTENTION_ENTROPY in wanted:
        # From the queries and keys of the forward pass: no second qkv, no (B, H, N, N) probabilities.
        entropy = attention_entropy_qk(block.q[:, :, first:].float(), block.k.float())  # (B, H)
        out[MetricKey(Metric.ATTENTION_ENTROPY, layer)] = entropy.mean(dim=-1)
        if config.per_head:
            _split_heads(out, Metric.ATTENTION_ENTROPY, layer, entropy)


def _measure_m(out: dict[MetricKey, torch.Tensor], m: torch.Tensor, layer: int, wanted: set, per_head: bool) -> None:
    """An elliptical layer's metric m, (B, H, 1, D): its mean and spread over coordinates, per head."""
    m = m.float().squeeze(-2)
    summaries = {
        Metric.ELLIPTICAL_M_MEAN: m.mean,
        Metric.ELLIPTICAL_M_SPREAD: functools.partial(torch.std, m, correction=0),
    }
    for metric in wanted & summaries.keys():
        values = summaries[metric](dim=-1)  # (B, H)
        out[MetricKey(metric, layer)] = values.mean(dim=-1)
        if per_head:
            _split_heads(out, metric, layer, values)


#: The order of a layer's values in a unit result (and so of its rows): the order they were always written in.
_METRIC_ORDER = (
    Metric.TOKEN_COSINE,
    Metric.EFFECTIVE_RANK,
    Metric.ATTENTION_ENTROPY,
    Metric.ELLIPTICAL_M_MEAN,
    Metric.ELLIPTICAL_M_SPREAD,
)


def _row_order(item: tuple[MetricKey, torch.Tensor]) -> tuple[int, int, int]:
    key = item[0]
    return key.layer, _METRIC_ORDER.index(key.metric), -1 if key.head is None else key.head


def _blocks(model: TokenModel, images: torch.Tensor, precision: Precision, last: int):
    """The model's blocks up to ``last``, each computed in ``precision`` (the generator runs inside the scope)."""
    blocks = model.iter_blocks(images)
    for _ in range(last + 1):
        with precision_scope(precision, images.device):
            block = next(blocks, None)
        if block is None:
            return
        yield block


def _split_heads(out: dict[MetricKey, torch.Tensor], metric: Metric, layer: int, values: torch.Tensor) -> None:
    """Store (B, H) values as one (B,) entry per head."""
    for head in range(values.shape[-1]):
        out[MetricKey(metric, layer, head)] = values[:, head]


def token_models(models: Mapping[str, object]) -> list[str]:
    """The names of the models whose collapse is measured: those with tokens; none of them is an error.

    A run with models of both kinds (e.g. a ViT against a ResNet baseline) measures collapse where it
    exists and evaluates every model for everything else; ``tokens`` in run.json says which.

    Args:
        models: name -> model module, in the run's order.
    """
    names = [name for name, module in models.items() if has_tokens(module)]
    if not names:
        raise UsageError(
            f"collapse needs tokens, and {', '.join(repr(n) for n in models)} expose none (it applies to "
            "transformers: ellrobust's ViTs and timm's VisionTransformers); drop --collapse or add such a model."
        )
    return names


class CollapseAccumulator:
    """Collects the collapse metrics of one model per image, for means, intervals and paired differences.

    Values are kept per position in the run's selection, so the mean over images is summed in
    position order: the same whatever the batch sizes, and bit-identical whether one process saw every
    batch or several ``torchrun`` ranks shared them (:meth:`state` and :meth:`merge` carry the values
    between ranks). The per-image values also go into the unit result (:meth:`values`), from which
    the engine derives paired differences between models measured on the same images.
    """

    def __init__(self, model: TokenModel, config: CollapseConfig, name: str = "the model") -> None:
        self.model = model
        self.config = config
        self.layers = config.resolve_layers(model.depth, name)
        self.summary_layers = later_half(self.layers, model.depth)
        self._images: dict[int, dict[MetricKey, float]] = {}

    @property
    def count(self) -> int:
        """Images seen so far."""
        return len(self._images)

    def add(self, images: torch.Tensor, positions: list[int]) -> None:
        """Measure a batch of [0, 1] images (B, 3, S, S) at ``positions`` of the selection."""
        metrics = collapse_metrics(self.model, images, self.config, self.layers)
        columns = {key: values.double().cpu().tolist() for key, values in metrics.items()}
        for i, p in enumerate(positions):
            self._images[p] = {key: values[i] for key, values in columns.items()}

    def state(self) -> dict[int, dict[MetricKey, float]]:
        """The per-image values, to send to another rank."""
        return dict(self._images)

    def merge(self, states: list[dict[int, dict[MetricKey, float]]]) -> None:
        """Take in the per-image values of every rank (this one's included)."""
        for state in states:
            self._images.update(state)

    def _series(self, size: int) -> dict[str, np.ndarray]:
        """Per :func:`value_key`, one value per position of the selection (NaN: not measured)."""
        keys = list(next(iter(self._images.values()))) if self._images else []
        out: dict[str, np.ndarray] = {}
        for key in keys:
            series = np.full(size, np.nan)
            for p, values in self._images.items():
                series[p] = values[key]
            out[value_key(key.metric.value, key.layer, key.head)] = series
        if self.summary_layers and keys:
            for metric in self.config.metrics:
                # a metric some layers lack (m, where a layer is not elliptical) has no later-half summary
                parts = [out.get(value_key(metric.value, layer)) for layer in self.summary_layers]
                if all(part is not None for part in parts):
                    out[value_key(metric.value, None)] = np.mean(parts, axis=0)
        return out

    def values(self, size: int) -> dict[str, list[float | None]]:
        """Per-image values over the selection of ``size`` images (None where an image was not measured)."""
        return {
            name: [None if np.isnan(v) else float(v) for v in series] for name, series in self._series(size).items()
        }

    def rows(
        self, measured: Mapping[str, object], size: int, extra_params: Mapping[str, object] | None = None
    ) -> list[Row]:
        """Result rows: per layer × metric (× head), the mean over the images measured and its 95 % t interval.

        Summary rows over the later half of the measured layers (per image averaged over those layers
        first) have an empty ``layer`` and list the layers in ``params``.

        Args:
            measured: the :class:`~ellrobust.results.rows.Row` fields every row shares (model, method,
                eps, m_grad, precision).
            size: the number of images in the run's selection (positions run from 0 to size − 1).
            extra_params: parameters of the method that produced the images (an attack's), merged
                into each row's ``params`` JSON next to the collapse settings.

        Returns:
            No rows if no image was added (e.g. an attack with no clean-correct image to attack).
        """
        rows = []
        for name, series in self._series(size).items():
            metric, layer, head = parse_value_key(name)
            layers = self.summary_layers if layer is None else ()
            values = series[~np.isnan(series)]
            if values.size == 0:
                continue
            mean, low, high = mean_interval(values)
            params = {**(extra_params or {}), **self.config.row_params(head)} | (
                {"layers": list(layers)} if layers else {}
            )
            where = {
                **measured,
                "params": json.dumps(params, sort_keys=True),
                "layer": layer,
            }  # the collapse settings' params
            row = Row(**where, metric=Metric(metric), value=mean)
            rows += [row, row.with_metric(row.metric.ci_low, low), row.with_metric(row.metric.ci_high, high)]
        return rows
