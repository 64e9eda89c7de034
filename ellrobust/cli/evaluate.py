"""``ellrobust eval``: clean, adversarial, corruption and collapse evaluation of one or more models."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import typer

from ellrobust.attacks import AttackRequest, make_request, validate_params
from ellrobust.cli import options
from ellrobust.core.parsing import (
    MAX_BUDGET,
    MAX_IMAGES,
    parse_budget,
    parse_checkpoints,
    parse_eps_list,
    parse_int_range,
    parse_name_list,
    parse_workers,
)
from ellrobust.request.suites import DEFAULT_SUITE


def default_run_dir(config) -> Path:
    """A folder named after the request, so re-running the same command resumes the same run."""
    digest = hashlib.sha256(json.dumps(config.folder_key(), sort_keys=True).encode()).hexdigest()[:8]
    return Path("reports") / "runs" / f"{config.dataset}-{digest}"


def attack_overrides(**kw: object) -> dict[str, object]:
    """The attack options the user actually set (None means: keep each attack's default)."""
    out = {k: v for k, v in kw.items() if v is not None}
    validate_params(out)
    return out


def build_attacks(attack: str | None, suite, overrides: dict, eps_given: bool) -> tuple[AttackRequest, ...]:
    if attack is not None:
        if attack.strip().lower() == "none":
            return ()
        return tuple(make_request(name, overrides) for name in parse_name_list(attack, "--attack"))
    if suite is None:
        return ()
    out = []
    for req in suite.attacks:
        merged = make_request(req.name, {**dict(req.params), **overrides})
        out.append(AttackRequest(merged.name, merged.params, None if eps_given else req.eps))
    return tuple(out)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: list[str] = options.MODELS,
        checkpoint: list[str] = options.CHECKPOINTS,
        data: str = typer.Option("digits", "--data", "-d", help="Dataset (see `ellrobust datasets`)."),
        data_root: Path | None = options.DATA_ROOT,
        split: str | None = typer.Option(None, help="Split to evaluate (default: the dataset's test/val split)."),
        n: int | None = typer.Option(
            None,
            "--n",
            "-n",
            help=(
                f"Number of images, a seeded subset of the split (default: all; at most {MAX_IMAGES:,}). "
                "Under torchrun write -n (torchrun reads --n as one of its own options)."
            ),
        ),
        indices: Path | None = typer.Option(
            None,
            "--indices",
            help="A file of the images to evaluate, one dataset index or path relative to the split folder a line "
            "(RobustBench's imagenet_test_image_ids.txt works as it is); with --n, a seeded subset of them.",
        ),
        class_map: Path | None = typer.Option(
            None,
            "--class-map",
            help="imagefolder: the class folder names, one a line, the line number (from 0) being the label (timm's).",
        ),
        seed: int = typer.Option(0, help="Seed for the image subset and the attacks' randomness."),
        batch_size: int = options.BATCH_SIZE,
        attack: str | None = typer.Option(
            None,
            "--attack",
            "-a",
            help="Attacks, comma-separated (see `ellrobust attacks`), or 'none' for clean accuracy only.",
        ),
        suite: Path | None = typer.Option(
            None, "--suite", help="A TOML suite from attacks/ (default when no --attack: attacks/quick.toml)."
        ),
        eps: str | None = typer.Option(
            None, "--eps", help="Budgets in [0, 1] pixel units, e.g. 1/255,2/255,4/255 (default: the dataset's)."
        ),
        steps: int | None = typer.Option(None, help=f"Iterations (PGD, APGD, SPSA), at most {MAX_BUDGET:,}."),
        step_size: str | None = typer.Option(None, help="PGD step: absolute (2/255) or relative to eps (0.25*eps)."),
        restarts: int | None = typer.Option(None, help=f"Random restarts (PGD, APGD, Square), at most {MAX_BUDGET:,}."),
        random_start: bool | None = typer.Option(None, "--random-start/--no-random-start", help="PGD random start."),
        norm: str | None = typer.Option(None, help="Threat model of APGD/Square/AutoAttack: Linf or L2."),
        samples: int | None = typer.Option(None, help=f"SPSA samples per gradient estimate, at most {MAX_BUDGET:,}."),
        lr: float | None = typer.Option(None, help="SPSA learning rate."),
        delta: float | None = typer.Option(None, help="SPSA finite-difference step."),
        queries: int | None = typer.Option(None, help=f"Square Attack query budget, at most {MAX_BUDGET:,}."),
        eps_max: str | None = typer.Option(
            None,
            "--eps-max",
            help="Minimal-norm methods (fmn, bisect-*): the largest budget searched, e.g. 16/255 "
            "(default: 16/255 L∞, 1.0 L2); an image unbroken there is censored.",
        ),
        resolution: str | None = typer.Option(
            None, "--resolution", help="bisect-*: the width to which ε* is bisected (default 1/255/16)."
        ),
        m_grad: str | None = typer.Option(
            None,
            "--m-grad",
            help="Attack through the elliptical metric: detach (the paper; default), full (adaptive), or both.",
        ),
        corruption: str | None = typer.Option(
            None,
            "--corruption",
            help="ImageNet-C corruptions: all, extra, 3dcc (ImageNet-3DCC, precomputed), or names, comma-separated.",
        ),
        severity: str | None = typer.Option(None, "--severity", help="Corruption severities, e.g. 1-5 (default) or 3."),
        corruption_root: Path | None = typer.Option(
            None,
            "--corruption-root",
            help="Precomputed ImageNet-C / ImageNet-3DCC / CIFAR-10-C folder instead of generating corruptions.",
        ),
        corruption_protocol: str = typer.Option(
            "auto",
            "--corruption-protocol",
            help=(
                "Corruption constants: imagenet-c (as released: JPEG quality 85), imagenet-c-raw (no JPEG), "
                "cifar-10-c (Hendrycks & Dietterich's for 32 px images) "
                "or auto (cifar-10-c under 64 px, else imagenet-c)."
            ),
        ),
        cache: Path | None = typer.Option(
            None,
            "--cache",
            help="Cache folder for decoded images and generated corrupted images, reused by later runs.",
        ),
        workers: str = options.WORKERS,
        memory_budget: float | None = typer.Option(
            None,
            "--memory-budget",
            help=(
                "GiB the decoded images may take in memory before they go to a memory-mapped file "
                "(default: half the available memory)."
            ),
        ),
        max_image_pixels: int | None = options.MAX_IMAGE_PIXELS,
        precision: str = typer.Option(
            "fp32",
            "--precision",
            help=(
                "Precision of the attack iterations: fp32, tf32 or bf16, or several side by side (bf16,fp32). "
                "Verdicts are always fp32."
            ),
        ),
        elliptical_layers: list[str] = options.ELLIPTICAL_LAYERS,
        heads: list[str] = options.HEADS,
        mean: list[str] = options.MEAN,
        std: list[str] = options.STD,
        img_size: int | None = options.IMG_SIZE,
        collapse: bool = typer.Option(
            False, "--collapse", help="Add per-layer token cosine similarity, attention entropy and effective rank."
        ),
        out: Path | None = options.OUT,
        json_out: bool = options.JSON,
        report: bool = typer.Option(
            False, "--report", help="Write report.md and figures into the run folder at the end."
        ),
        sanity: bool = typer.Option(True, "--sanity/--no-sanity", help="Run the attack sanity checks."),
        device: str = options.DEVICE,
        deterministic: bool = options.DETERMINISTIC,
        save_adversarial: bool = typer.Option(
            False,
            "--save-adversarial",
            help="Keep every attack's images: one safetensors file per model, attack and budget in the run "
            "folder's adversarial/ (index, x_adv, label, prediction; README, 'Adversarial images').",
        ),
        transfer: bool = typer.Option(
            False,
            "--transfer",
            help="Judge every model's adversarial images by every other model too (transfer_accuracy rows, "
            "a source × target table): a white-box attack weaker than a transferred one signals gradient masking.",
        ),
        labels: str | None = typer.Option(
            None,
            "--labels",
            help="Attack the true labels of clean-correct images (true, the default), or every image's clean "
            "prediction (predicted, as the official Elliptical code): robust then means the prediction did not change.",
        ),
    ) -> None:
        """Evaluate models on the same images: clean accuracy, attacks, corruptions, collapse.

        Examples:

          ellrobust eval --model deit-elliptical --model deit --attack pgd

          ellrobust eval -m deit-elliptical -m deit --attack fgsm,pgd,spsa --eps 1/255,4/255 --m-grad both

          ellrobust eval -m deit-elliptical -m deit --corruption all --severity 1-5 --n 200
        """
        from ellrobust.cli.terminal import (
            accuracy_table,
            calibration_table,
            collapse_table,
            corruption_table,
            eps_star_table,
            ood_table,
            paired_table,
            print_json,
            stderr,
            stdout,
            transfer_table,
            verdict,
            warn_sanity,
        )
        from ellrobust.engine.runner import EvalConfig
        from ellrobust.measures.collapse_probe import CollapseConfig
        from ellrobust.request.suites import load_suite
        from ellrobust.results import read_run_json
        from ellrobust.verdict.rules import elliptical_models

        overrides = attack_overrides(
            steps=steps,
            step_size=step_size,
            restarts=restarts,
            random_start=random_start,
            norm=norm,
            samples=samples,
            lr=lr,
            delta=delta,
            queries=queries,
            eps_max=parse_budget(eps_max, "--eps-max"),
            resolution=parse_budget(resolution, "--resolution"),
        )
        use_suite = (
            suite
            if suite is not None
            else (Path(DEFAULT_SUITE) if attack is None and corruption is None and not collapse else None)
        )
        loaded = load_suite(use_suite) if use_suite is not None else None
        eps_values = parse_eps_list(eps) if eps is not None else (loaded.eps if loaded else None)
        attacks = build_attacks(attack, loaded, overrides, eps is not None)
        corruptions = (
            parse_name_list(corruption, "--corruption") if corruption else (loaded.corruptions if loaded else ())
        )
        if severity is not None:
            severities = parse_int_range(severity, "--severity", 1, 5)
        else:
            severities = (loaded.severities if loaded else None) or (1, 2, 3, 4, 5)
        n_value = n if n is not None else (loaded.n if loaded else None)
        config = EvalConfig(
            models=tuple(model),
            checkpoints=parse_checkpoints(checkpoint),
            dataset=data,
            data_root=str(data_root) if data_root else None,
            split=split,
            n=n_value,
            seed=seed,
            batch_size=batch_size,
            attacks=attacks,
            eps=eps_values,
            m_grad=m_grad or (loaded.m_grad if loaded else None) or "detach",
            corruptions=corruptions,
            severities=severities,
            corruption_source=str(corruption_root) if corruption_root else None,
            corruption_protocol=corruption_protocol,
            cache_dir=str(cache) if cache else None,
            workers=parse_workers(workers),
            memory_budget_gb=memory_budget,
            precision=parse_name_list(precision, "--precision"),
            **options.model_settings(elliptical_layers, heads, mean, std, img_size),
            collapse=CollapseConfig() if (collapse or (loaded and loaded.collapse)) else None,
            sanity=sanity,
            device=device,
            deterministic=deterministic,
            save_adversarial=save_adversarial,
            transfer=transfer,
            indices=str(indices) if indices else None,
            class_map=str(class_map) if class_map else None,
            labels=labels or (loaded.labels if loaded else None) or "true",
        )
        result = execute(config, out, max_image_pixels)
        if result is None:
            return  # under torchrun, rank 0 alone prints and writes
        run_dir, table = result.run_dir, result.table
        if json_out:
            print_json(table)
        else:
            stdout.print(
                accuracy_table(table, f"Accuracy (%) · {config.dataset} · n={table['n'].iloc[0]} · seed={seed}")
            )
            extras = (transfer_table(table), eps_star_table(table), corruption_table(table), ood_table(table))
            for extra in (*extras, calibration_table(table)):
                if extra is not None:
                    stdout.print(extra)
            paired = paired_table(table)
            if paired is not None:
                stdout.print(paired)
            collapsed = collapse_table(table)
            if collapsed is not None:
                stdout.print(collapsed)
            lines = verdict(table, elliptical_models(read_run_json(run_dir)))
            if lines is not None:
                stdout.print(lines)
        warn_sanity(table)
        if report:
            from ellrobust.report.writer import write_report

            stderr.print(f"report: {write_report([run_dir], run_dir)}")


def execute(config, out: Path | None, max_image_pixels: int | None = None):
    """Run an evaluation with progress on stderr; its :class:`~ellrobust.api.Results` (None on torchrun's other ranks).

    Shared by ``eval`` and ``collapse``. It calls :func:`ellrobust.api.run_config`, as
    ``ellrobust.evaluate`` does; here the default run folder is named after the request under
    ``reports/runs/``, and the command line is recorded in run.json so that reports can say how to
    reproduce them.
    ``--max-image-pixels`` is not part of the request (it changes no number, only which files may be
    read), so raising it after a refused image resumes the same run folder.
    """
    from ellrobust.api import run_config
    from ellrobust.cli.terminal import data_warnings, stderr, unit_progress
    from ellrobust.core.distributed import is_main_process
    from ellrobust.data import image_pixel_limit
    from ellrobust.results import read_run_json

    run_dir = out if out is not None else default_run_dir(config)
    command = (
        shlex.join(["ellrobust", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("ellrobust", "__main__.py") else None
    )
    with (
        image_pixel_limit(max_image_pixels),
        data_warnings(),
        unit_progress(enabled=is_main_process()) as progress,
    ):
        result = run_config(config, out=run_dir, progress=progress, command=command)
    if not is_main_process():
        return None
    stderr.print(f"results: {run_dir}/results.csv ({result.computed} units computed, {result.reused} reused)")
    meta = read_run_json(run_dir)
    for death in meta.get("worker_deaths", []):
        stderr.print(
            f"warning: a worker process died ({death['cause']}); "
            f"a fresh worker ran its {death['lost_tasks']} task(s) again (see run.json)."
        )
    if config.collapse is not None:
        models = meta["models"]
        skipped = [name for name, info in models.items() if not info.get("tokens", True)]
        if skipped:
            stderr.print(
                f"collapse: not measured for {', '.join(skipped)} (no tokens); the other models were measured."
            )
    return result
