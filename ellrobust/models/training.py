"""DeiT-style training (AdamW, warm-up + cosine, label smoothing, light augmentation), seeded.

Small on purpose: it trains the shipped CPU models and lets users fine-tune any registered
architecture on any registered dataset. It reports progress through a callback and never prints.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ellrobust.core.distributed import init_distributed
from ellrobust.core.precision import Precision, fp32_predictions, precision_scope
from ellrobust.core.version import __version__


@dataclass(frozen=True)
class TrainConfig:
    """The recipe. Defaults train ``deit-micro`` on the embedded digits to ≥ 95 % in a few minutes."""

    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    label_smoothing: float = 0.1
    augment_padding: int = 3  # random translation by up to this many pixels (no flips: digits are not symmetric)
    seed: int = 0
    precision: Precision = Precision.FP32  # forward and backward passes; bf16 is autocast, weights stay fp32


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float
    lr: float


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    test_accuracy: float | None = None


ProgressFn = Callable[[str, int, int, dict], None]


def _noop(kind: str, done: int, total: int, info: dict) -> None:
    return None


def random_translate(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by reflection and crop back at a random offset per image (a seeded RandomCrop)."""
    if padding <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up to ``base``, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: Dataset, batch_size: int = 256, device: str = "cpu") -> float:
    model.eval()
    correct = total = 0
    for x, y in DataLoader(data, batch_size=batch_size):
        pred = fp32_predictions(model, x.to(device)).cpu()
        correct += (pred == y).sum().item()
        total += len(y)
    return correct / max(1, total)


def train(
    model: nn.Module,
    train_data: Dataset,
    cfg: TrainConfig,
    *,
    test_data: Dataset | None = None,
    progress: ProgressFn = _noop,
    device: str = "cpu",
) -> TrainResult:
    """Train ``model`` in place and return its history (and test accuracy when ``test_data`` is given).

    Under ``torchrun`` the model is wrapped in DistributedDataParallel and each rank reads its own
    part of every epoch (``DistributedSampler``, seeded), so the global batch is ``world_size ×
    batch_size``; epoch statistics are summed over ranks. The caller saves on rank 0 only.
    """
    info = init_distributed(device, cuda_collectives=True)  # DDP all-reduces CUDA gradients: nccl there
    device = info.device(device)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + info.rank)
    sampler = None
    if info.enabled:
        sampler = DistributedSampler(
            train_data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
        )
        loader = DataLoader(train_data, batch_size=cfg.batch_size, sampler=sampler)
    else:
        loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=False)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n)
    ]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    result = TrainResult()
    step = 0
    model.to(device)
    net = DistributedDataParallel(model) if info.enabled else model
    for epoch in range(cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        loss_sum = correct = seen = 0.0
        for x, y in loader:
            lr = lr_at(step, total, warmup, cfg.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            x = random_translate(x, cfg.augment_padding, g).to(device)
            y = y.to(device)
            opt.zero_grad(set_to_none=True)
            with precision_scope(cfg.precision, x.device):  # forward and backward in the recipe's precision
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            progress("batch", step, total, {"epoch": epoch + 1, "loss": loss_sum / seen, "acc": correct / seen})
        if info.enabled:
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = totals.tolist()
        result.history.append(EpochStats(epoch + 1, loss_sum / seen, correct / seen, lr))
    model.eval()
    if test_data is not None:
        result.test_accuracy = evaluate_accuracy(model, test_data, device=device)
    info.leave()
    return result


def checkpoint_metadata(
    *, arch: str, dataset: str, dataset_digest: str, model_cfg, cfg: TrainConfig, result: TrainResult
) -> dict:
    """Everything needed to know what a trained checkpoint is and to reproduce it.

    The architecture is recorded in full (the :class:`~ellrobust.models.vit.ViTConfig` fields: width,
    depth, heads, patch and image size, classes, elliptical layers, normalisation ...), so that
    ``-m vit -c FILE`` / ``-m vit-elliptical -c FILE`` rebuild it without flags: the heads and the
    elliptical layers are not in the weights' shapes.
    """
    architecture = {k: v for k, v in model_cfg.describe().items() if k != "library"}
    return {
        "arch": arch,
        "dataset": dataset,
        "dataset_digest": dataset_digest,
        **architecture,
        "recipe": asdict(cfg),
        "seed": cfg.seed,
        "final_loss": result.history[-1].loss if result.history else None,
        "test_accuracy": result.test_accuracy,
        "ellrobust_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }
