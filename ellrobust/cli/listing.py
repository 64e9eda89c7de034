"""``ellrobust models``, ``datasets`` and ``attacks``: what is registered, straight from the registries."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table


def models_cmd(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the registered architectures, the trained checkpoints that ship, and the other ways to name a model."""
    from ellrobust.cli.terminal import stdout
    from ellrobust.models import MODELS, PREFIXES, SHIPPED, SHORT_NAMES

    rows = [
        {
            "name": spec.name,
            "params": spec.num_params(),
            "image_size": spec.config.img_size,
            "patch_size": spec.config.patch_size,
            "width": spec.config.embed_dim,
            "depth": spec.config.depth,
            "heads": spec.config.num_heads,
            "elliptical": spec.elliptical,
            "description": spec.description,
        }
        for _, spec in MODELS.items()
    ]
    shipped = []
    for ck in SHIPPED:
        meta = ck.metadata()
        shipped.append(
            {
                "dataset": ck.dataset,
                "arch": ck.arch,
                "file": ck.filename,
                "available": ck.path.is_file(),
                "test_accuracy": meta.get("test_accuracy"),
            }
        )
    sources = [
        {"name": "vit", "example": "-m vit -c deit_small.safetensors --heads 6", "description": _INFERRED_HELP},
        {
            "name": "vit-elliptical",
            "example": "-m vit-elliptical -c deit_small.safetensors --heads 6",
            "description": _TWIN_HELP,
        },
        *(
            {"name": f"{p.prefix}:NAME", "example": p.example, "description": p.description}
            for _, p in PREFIXES.items()
        ),
    ]
    if json_out:
        typer.echo(
            json.dumps(
                {"architectures": rows, "short_names": SHORT_NAMES, "shipped": shipped, "your_own": sources},
                indent=1,
            )
        )
        return
    for shown in _model_tables(rows, shipped, sources):
        stdout.print(shown)


def _model_tables(rows: list[dict], shipped: list[dict], sources: list[dict]) -> list[Table]:
    """The three tables of ``ellrobust models``: architectures, shipped checkpoints, your own model."""
    table = Table(title="Architectures")
    for col in ("name", "params", "image", "patch", "width×depth×heads", "elliptical", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['params'] / 1e6:.2f} M",
            str(r["image_size"]),
            str(r["patch_size"]),
            f"{r['width']}×{r['depth']}×{r['heads']}",
            "yes" if r["elliptical"] else "no",
            r["description"],
        )
    ship = Table(title="Shipped checkpoints (short names `deit` / `deit-elliptical` on the embedded dataset)")
    for col in ("dataset", "architecture", "file", "test accuracy"):
        ship.add_column(col)
    for s in shipped:
        acc = (
            f"{s['test_accuracy'] * 100:.1f}%"
            if isinstance(s["test_accuracy"], float)
            else ("missing" if not s["available"] else "")
        )
        ship.add_row(s["dataset"], s["arch"], s["file"], acc)
    own = Table(title="Your own model (weights from local files only; nothing is downloaded)")
    for col in ("--model", "example", "what"):
        own.add_column(col)
    for r in sources:
        own.add_row(escape(r["name"]), escape(r["example"]), escape(r["description"]))
    return [table, ship, own]


def datasets_cmd(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the registered datasets (all read locally; nothing is downloaded)."""
    from ellrobust.cli.terminal import stdout
    from ellrobust.data import DATASETS
    from ellrobust.report.number_format import format_eps

    rows = [
        {
            "name": s.name,
            "image_size": s.image_size,
            "classes": s.num_classes,
            "default_model": s.default_arch,
            "default_eps": list(s.default_eps),
            "needs_data_root": s.needs_root,
            "splits": list(s.splits),
            "description": s.description,
        }
        for _, s in DATASETS.items()
    ]
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="Datasets")
    for col in ("name", "image", "classes", "default model", "default eps", "--data-root", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            str(r["image_size"]),
            str(r["classes"] or "from data"),
            r["default_model"],
            ", ".join(format_eps(e) for e in r["default_eps"]),
            "required" if r["needs_data_root"] else "-",
            escape(r["description"]),
        )
    stdout.print(table)


def attacks_cmd(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the attacks with their parameters and defaults (and the corruptions, when available)."""
    from ellrobust.attacks import ATTACKS
    from ellrobust.cli.terminal import stdout

    rows = [
        {
            "name": d.name,
            "label": d.label,
            "norm": d.norm,
            "gradient_free": d.gradient_free,
            "params": dict(d.defaults),
            "cost": d.cost,
            "description": d.description,
        }
        for _, d in ATTACKS.items()
    ]
    corruptions = _corruption_rows()
    if json_out:
        typer.echo(json.dumps({"attacks": rows, "corruptions": corruptions}, indent=1))
        return
    table = Table(title="Attacks (eps in [0, 1] pixel units; norm patch: numbers of patches, --patches)")
    for col in ("name", "norm", "parameters (defaults)", "cost per attacked image", "description"):
        table.add_column(col)
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        table.add_row(
            r["name"] + (" (gradient-free)" if r["gradient_free"] else ""),
            r["norm"],
            params,
            r["cost"],
            r["description"],
        )
    stdout.print(table)
    if corruptions:
        ctable = Table(title="Corruptions (--corruption)")
        for col in ("name", "group", "set"):
            ctable.add_column(col)
        for c in corruptions:
            ctable.add_row(c["name"], c.get("group", ""), c.get("set", ""))
        stdout.print(ctable)


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
    app.command("datasets")(datasets_cmd)
    app.command("attacks")(attacks_cmd)


_INFERRED_HELP = (
    "ellrobust's ViT built from the checkpoint's shapes (width, depth, patch, image size, classes; DeiT's distillation "
    "token and DeiT-III's LayerScale included); the heads from --heads or the checkpoint's metadata"
)
_TWIN_HELP = (
    "the elliptical twin of any plain ViT checkpoint: --elliptical-layers (default: every block after the first) "
    "or the metadata's"
)


def _corruption_rows() -> list[dict]:
    try:
        from ellrobust.corruptions import every_corruption
    except ImportError:
        return []
    return [{"name": name, "group": c.group, "set": c.set} for name, c in every_corruption()]
