"""Options shared by several commands, declared once so their names and help stay the same."""

from __future__ import annotations

import typer

MODELS = typer.Option(
    ...,
    "--model",
    "-m",
    help="Model name (repeat for several): deit, deit-elliptical, any of `ellrobust models`, vit / vit-elliptical "
    "(architecture read from the checkpoint), or timm:NAME / torchvision:NAME.",
)
CHECKPOINTS = typer.Option(
    [],
    "--checkpoint",
    "-c",
    help="Weights for each --model, in order (.safetensors or weights-only .pth); "
    "'-' for a model's default (shipped or random weights).",
)
DATA_ROOT = typer.Option(None, "--data-root", help="Folder holding the dataset (never downloaded).")
BATCH_SIZE = typer.Option(128, help="Images per batch.")
OUT = typer.Option(
    None,
    "--out",
    "-o",
    help="Run folder (default: reports/runs/<dataset>-<hash of the request>); re-running resumes it.",
)
JSON = typer.Option(False, "--json", help="Print the result records as JSON on stdout instead of tables.")
DEVICE = typer.Option("cpu", help="Torch device, e.g. cpu or cuda (under torchrun: each rank's own GPU).")
DETERMINISTIC = typer.Option(
    False,
    "--deterministic",
    help="Deterministic CUDA kernels (torch.use_deterministic_algorithms, fixed cuBLAS workspace, "
    "no cuDNN autotuning): the same command on the same GPU and software gives the same table bit for bit. "
    "CPU runs are deterministic anyway.",
)
WORKERS = typer.Option(
    "auto",
    "--workers",
    help="Worker processes of the run's one pool (decoding, corruptions): "
    "auto (the cores for on-disk data, 0 for data in memory) or a number.",
)
ELLIPTICAL_LAYERS = typer.Option(
    [],
    "--elliptical-layers",
    help="0-based elliptical blocks, e.g. 1-11 (the default: every block after the first): "
    "once for every elliptical model, or once per --model in order ('-' keeps a model's default). "
    "Official elliptical checkpoints do not record them.",
)
HEADS = typer.Option(
    [],
    "--heads",
    help="Attention heads of `-m vit` / `-m vit-elliptical` "
    "(not in a checkpoint's shapes; checkpoints from `ellrobust train` record them): "
    "once for all such models, or once per --model in order ('-' for the others).",
)
MEAN = typer.Option(
    [],
    "--mean",
    help="Normalisation mean inside the model, R,G,B (or one value): "
    "overrides the checkpoint's metadata or the pretrained config; "
    "once for all models, or once per --model in order ('-' keeps a model's own).",
)
STD = typer.Option([], "--std", help="Normalisation std inside the model, like --mean.")
MAX_IMAGE_PIXELS = typer.Option(
    None,
    "--max-image-pixels",
    help="Largest image (width × height) read from an image folder; "
    "a larger one stops the run as a possible decompression bomb "
    "(default: Pillow's 89478485). Raise it for genuine large images.",
)
IMG_SIZE = typer.Option(
    None,
    "--img-size",
    help="Side of the run's images: image folders are resized and cropped to it "
    "(default 224; other datasets have one size). "
    "It also states the input size of timm/torchvision models (default: their pretrained config's).",
)


def model_settings(
    elliptical_layers: list[str], heads: list[str], mean: list[str], std: list[str], img_size: int | None
) -> dict:
    """The per-model options shared by ``eval`` and ``collapse``, parsed into :class:`EvalConfig` fields."""
    from ellrobust.core.parsing import parse_channels, parse_elliptical_layers, parse_heads

    return {
        "elliptical_layers": parse_elliptical_layers(elliptical_layers),
        "image_size": img_size,
        "heads": parse_heads(heads),
        "mean": parse_channels(mean, "--mean"),
        "std": parse_channels(std, "--std"),
    }
