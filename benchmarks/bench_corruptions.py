"""Corruption evaluation of two models: one shared corrupted batch vs corrupting once per model.

The corruption stage corrupts each batch once and feeds it to every model of the run. This script
measures what that saves, side by side in one process on the same images:

* shared: one run with both models (what ``ellrobust eval -m A -m B --corruption ...`` does);
* per model: one run per model, so every image is corrupted once for each model.

Only the corruption units are timed (from each unit's start to its end, through the engine's
progress events), so model loading and the clean pass do not dilute the comparison; the units also
record how much of that time went to producing images (``data_seconds``) and to the models' forward
passes (``model_seconds``). The numba kernel of ``glass_blur`` is compiled before timing. Generated
images are counted from the units' records (``generated_images``): each image is corrupted once per run.

Two speed-ups are printed. *Generation*: model-images served per second of image production, which
sharing doubles for two models. *End to end*: bounded by (2G + 2F) / (G + 2F) for generation cost G
and forward cost F per image, so it nears 2× only where generating dominates (cheap models, or
models on a GPU); with CPU models as costly as the corruption itself it is well below.

    python benchmarks/bench_corruptions.py                 # digits, n=200, 15 corruptions, severity 3
    python benchmarks/bench_corruptions.py --severity 1-5 --workers 2
    python benchmarks/bench_corruptions.py --models deit-nano-elliptical,deit-nano --threads 1   # cheap models
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ellrobust.core.parsing import parse_int_range
from ellrobust.corruptions import resolve_corruptions
from ellrobust.corruptions.generate import warm_up
from ellrobust.engine.runner import EvalConfig, Evaluation, ProgressEvent


@dataclass(frozen=True)
class Timing:
    seconds: float
    data_seconds: float  # producing the corrupted images
    model_seconds: float  # the models' forward passes
    generated: int  # images corrupted
    evaluated: int  # model × image forward passes on corrupted images


class UnitClock:
    """Progress callback that sums the wall time of the corruption units (label ``* <name> s<k>``)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.total = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        if not event.label.startswith("* "):
            return
        if event.kind == "start":
            self.started[event.label] = time.perf_counter()
        elif event.kind == "end" and event.label in self.started:
            self.total += time.perf_counter() - self.started.pop(event.label)


def run(models: tuple[str, ...], args: argparse.Namespace, out: Path) -> Timing:
    cfg = EvalConfig(
        models=models,
        dataset=args.data,
        n=args.n,
        batch_size=args.batch_size,
        corruptions=args.corruptions,
        severities=args.severities,
        workers=args.workers,
    )
    clock = UnitClock()
    Evaluation(cfg, out, clock).run()
    extras = [json.loads(p.read_text())["extra"] for p in (out / "units").glob("corruption_*.json")]
    generated = sum(e["generated_images"] for e in extras)
    evaluated = sum(e["images"] for e in extras) * len(models)
    data = sum(e["data_seconds"] for e in extras)
    model = sum(e["model_seconds"] for e in extras)
    return Timing(clock.total, data, model, generated, evaluated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deit-micro-elliptical,deit-micro")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--corruption", default="all")
    parser.add_argument("--severity", default="3")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's); 1 avoids thread-pool stalls on a busy machine",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.corruptions = resolve_corruptions(args.corruption.split(","))
    args.severities = parse_int_range(args.severity, "--severity", 1, 5)
    models = tuple(args.models.split(","))
    for name in args.corruptions:
        for s in args.severities:
            warm_up(name, s, "cifar-10-c", 32)  # the digits are 32 px: the CIFAR-10-C protocol

    with tempfile.TemporaryDirectory() as tmp:
        shared = run(models, args, Path(tmp) / "shared")
        per_model = [run((m,), args, Path(tmp) / f"alone-{m}") for m in models]
    alone = Timing(
        *(
            sum(getattr(t, f) for t in per_model)
            for f in ("seconds", "data_seconds", "model_seconds", "generated", "evaluated")
        )
    )

    units = len(args.corruptions) * len(args.severities)
    print(
        f"corruption evaluation of {len(models)} models ({', '.join(models)}) on {args.data}, n={args.n}, "
        f"{len(args.corruptions)} corruptions × severities {list(args.severities)} = {units} units, "
        f"batch {args.batch_size}, workers {args.workers}, torch threads {torch.get_num_threads()}"
    )
    for label, t in (("shared batches", shared), ("per model", alone)):
        print(
            f"  {label:<15} {t.generated:>6} images generated ({t.generated / (units * args.n):.0f}x each) "
            f"in {t.data_seconds:6.2f} s "
            f"({t.generated / t.data_seconds:5.0f} images/s); {t.evaluated} model-images, "
            f"forward {t.model_seconds:6.2f} s; "
            f"total {t.seconds:6.2f} s -> {t.evaluated / t.seconds:5.0f} model-images/s"
        )
    print(
        f"  generation throughput, shared vs per model: {alone.data_seconds / shared.data_seconds:.2f}x "
        "(target >= 1.8x)"
    )
    print(f"  end-to-end throughput, shared vs per model: {alone.seconds / shared.seconds:.2f}x")


if __name__ == "__main__":
    main()
