"""``ellrobust train``: train any registered model on any registered dataset, write safetensors + metadata."""

from __future__ import annotations

from pathlib import Path

import typer

from ellrobust.cli import options


def train_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Architecture to train (see `ellrobust models`)."),
    data: str = typer.Option("digits", "--data", "-d", help="Dataset (see `ellrobust datasets`)."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding the dataset."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (.safetensors)."),
    epochs: int = typer.Option(60, min=1, help="Training epochs."),
    batch_size: int = typer.Option(64, min=1, help="Images per step."),
    lr: float = typer.Option(1e-3, min=0.0, help="Peak AdamW learning rate."),
    weight_decay: float = typer.Option(0.05, min=0.0, help="AdamW weight decay."),
    warmup_epochs: int = typer.Option(5, min=0, help="Linear warm-up epochs before the cosine decay."),
    label_smoothing: float = typer.Option(0.1, min=0.0, max=1.0, help="Label smoothing."),
    seed: int = typer.Option(0, help="Seed (initialisation, shuffling, augmentation)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Start from these weights (fine-tuning)."),
    reset_head: bool = typer.Option(
        False, "--reset-head", help="Fresh classifier if the checkpoint's has another size."
    ),
    elliptical_layers: str | None = typer.Option(
        None, "--elliptical-layers", help="0-based elliptical blocks, e.g. 1-11 (default: all after the first)."
    ),
    heads: int | None = typer.Option(None, "--heads", help="Heads of `-m vit[-elliptical]` from --checkpoint."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, tf32 or bf16 training passes (test: fp32)."),
    device: str = typer.Option("cpu", help="Torch device."),
    max_image_pixels: int | None = options.option("max_image_pixels"),
) -> None:
    """Train with a DeiT-style recipe (AdamW, warm-up + cosine, label smoothing, random translation).

    The shipped models were made with:

      ellrobust train --model deit-micro --data digits --out ellrobust/models/weights/digits-deit-micro.safetensors
    """
    import torch

    from ellrobust.cli.terminal import stdout
    from ellrobust.core.distributed import is_main_process
    from ellrobust.core.parsing import parse_elliptical_layers
    from ellrobust.core.precision import parse_precision
    from ellrobust.data import image_pixel_limit, load_dataset
    from ellrobust.models import load_model
    from ellrobust.models.checkpoint import save_safetensors
    from ellrobust.models.training import TrainConfig, checkpoint_metadata

    _check_request(model, out, checkpoint)
    train_data = load_dataset(data, "train", data_root)
    test_split = train_data.spec.eval_split
    test_data = load_dataset(data, test_split, data_root)
    torch.manual_seed(seed)
    layers = parse_elliptical_layers([elliptical_layers])[0] if elliptical_layers is not None else None
    net = load_model(
        model,
        checkpoint=checkpoint,
        num_classes=train_data.num_classes,
        img_size=train_data.spec.image_size,
        dataset=data,
        default_arch=train_data.spec.default_arch,
        reset_head=reset_head,
        elliptical_layers=layers,
        heads=heads,
    )
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        seed=seed,
        precision=parse_precision(precision),
    )
    main = is_main_process()
    with image_pixel_limit(max_image_pixels):
        result = _train_with_progress(net, train_data, test_data, cfg, f"train {model} on {data}", device, main)
    if not main:
        return  # under torchrun, rank 0 alone writes the checkpoint
    meta = checkpoint_metadata(
        arch=model, dataset=data, dataset_digest=train_data.digest, model_cfg=net.cfg, cfg=cfg, result=result
    )
    save_safetensors(net.state_dict(), out, meta)
    first, last = result.history[0].loss, result.history[-1].loss
    stdout.print(
        f"{model} on {data}: loss {first:.3f} → {last:.3f}, test accuracy {result.test_accuracy * 100:.2f}%; "
        f"rank 0 wrote {out}"
    )


def _check_request(model: str, out: Path, checkpoint: Path | None) -> None:
    """Refuse, before any data is read, what cannot become a checkpoint of ellrobust's ViT."""
    from ellrobust.core.errors import UsageError
    from ellrobust.models.external import split_prefix

    if out.suffix != ".safetensors":
        raise UsageError(f"--out {str(out)!r} must end in .safetensors (checkpoints are written as safetensors).")
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; pass a file path ending in .safetensors.")
    if checkpoint is None and model in ("deit", "deit-elliptical"):
        raise UsageError(
            f"--model {model!r} is a short name for a trained model; "
            "train an architecture such as 'deit-micro' or 'deit-micro-elliptical'."
        )
    if split_prefix(model) is not None:
        raise UsageError(
            f"`ellrobust train` trains ellrobust's ViTs; {model!r} is another library's model "
            "(evaluate it with `ellrobust eval`)."
        )


def _train_with_progress(net, train_data, test_data, cfg, label: str, device: str, main: bool):
    """:func:`ellrobust.models.training.train` with a progress bar on stderr (rank 0 only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ellrobust.cli.terminal import stderr
    from ellrobust.models.training import train

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=stderr,
        disable=not main,
    )
    with progress:
        task = progress.add_task(label, total=None, info="")

        def report(kind: str, done: int, total: int, info: dict) -> None:
            progress.update(
                task,
                completed=done,
                total=total,
                info=f"epoch {info['epoch']} loss {info['loss']:.3f} acc {info['acc'] * 100:.1f}%",
            )

        return train(net, train_data.dataset, cfg, test_data=test_data.dataset, progress=report, device=device)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
