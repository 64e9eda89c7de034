"""`ellrobust eval --attack pgd` against the loop a user would write by hand with torchattacks.

Both attack the same model on the same images at the same budgets with the same PGD settings. The
hand-written loop attacks every image; ellrobust skips the images the model already gets wrong
(they count as non-robust either way), so its wall time should not exceed the loop's whenever clean
accuracy is below 100 %. The second figure is ellrobust's overhead beyond the unavoidable work:
steps × (forward + backward) for each attacked image, plus one clean forward pass per image.
Sanity checks are switched off for the comparison (they add a large-eps PGD run on purpose). On CUDA
every clock is read after ``torch.cuda.synchronize()``, the hand loop and the ideal's passes are
warmed up before they are timed, and the compilation time ellrobust's runs record (run.json
``attention.compile_seconds``) is subtracted from them and printed.

    python benchmarks/bench_pgd.py [--model deit-elliptical] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchattacks

from ellrobust.attacks import make_request
from ellrobust.core.allocator import keep_freed_memory
from ellrobust.data import load_dataset
from ellrobust.engine.runner import EvalConfig, Evaluation
from ellrobust.models import load_model

EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
STEPS = 10


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hand_loop(model, x_all, y_all, batch: int, device: str) -> float:
    """What a user writes: for each eps, PGD on every image, then count the correct predictions."""
    sync(device)
    start = time.perf_counter()
    for eps in EPS:
        atk = torchattacks.PGD(model, eps=eps, alpha=0.25 * eps, steps=STEPS, random_start=True)
        correct = 0
        for i in range(0, len(x_all), batch):
            x, y = x_all[i : i + batch].to(device), y_all[i : i + batch].to(device)
            adv = atk(x, y)
            with torch.no_grad():
                correct += (model(adv).argmax(1) == y).sum().item()
    sync(device)
    return time.perf_counter() - start


def ellrobust_run(model_name: str, batch: int, device: str) -> tuple[float, float, object]:
    """Seconds of the run without its compilation, the compilation's seconds, and the results table."""
    config = EvalConfig(
        models=(model_name,),
        attacks=(make_request("pgd", {"steps": STEPS, "step_size": "0.25*eps"}),),
        eps=EPS,
        batch_size=batch,
        sanity=False,
        device=device,
    )
    with tempfile.TemporaryDirectory() as tmp:
        sync(device)
        start = time.perf_counter()
        result = Evaluation(config, tmp).run()
        sync(device)
        seconds = time.perf_counter() - start
        compiling = json.loads((Path(tmp) / "run.json").read_text())["attention"]["compile_seconds"]
        return seconds - compiling, compiling, result.table


def fwd_bwd_per_image(model, x: torch.Tensor, y: torch.Tensor, repeats: int = 20) -> float:
    """One PGD step's unavoidable work: forward, and the gradient with respect to the input only."""
    times = []
    for i in range(repeats + 3):  # 3 warm-up passes (allocator, kernels, compilation)
        xi = x.clone().requires_grad_(True)
        sync(str(x.device))
        start = time.perf_counter()
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(xi), y), xi)
        sync(str(x.device))
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(x)


def fwd_per_image(model, x: torch.Tensor, repeats: int = 20) -> float:
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            sync(str(x.device))
            start = time.perf_counter()
            model(x)
            sync(str(x.device))
            if i >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times) / len(x)


def main() -> None:
    keep_freed_memory()  # the allocation policy of the CLI's process, so the figures are the CLI's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit-elliptical")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    data = load_dataset("digits")
    x_all = torch.stack([data.dataset[i][0] for i in range(len(data))])
    y_all = torch.stack([data.dataset[i][1] for i in range(len(data))])
    torch.manual_seed(0)
    model = load_model(args.model).to(args.device)
    hand_loop(model, x_all[: args.batch], y_all[: args.batch], args.batch, args.device)  # warm-up, untimed
    hand, ours, compiles, table = [], [], [], None
    for _ in range(args.repeats):  # interleaved
        hand.append(hand_loop(model, x_all, y_all, args.batch, args.device))
        t, compiling, table = ellrobust_run(args.model, args.batch, args.device)
        ours.append(t)
        compiles.append(compiling)
    clean = float(table[table.metric == "clean_accuracy"].value.iloc[0])
    attacked = table[table.metric == "n_attacked"].value.sum()
    xb, yb = x_all[: args.batch].to(args.device), y_all[: args.batch].to(args.device)
    f, fb = fwd_per_image(model, xb), fwd_bwd_per_image(model, xb, yb)
    ideal = attacked * (STEPS * fb + f) + len(x_all) * f
    ideal_hand = len(x_all) * len(EPS) * (STEPS * fb + f)
    device = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    t_hand, t_ours = statistics.median(hand), statistics.median(ours)
    print(f"device: {device}; model {args.model}; {len(x_all)} images; PGD-{STEPS} at {len(EPS)} budgets")
    print(f"clean accuracy: {clean:.3f}; images attacked: {int(attacked)} of {len(x_all) * len(EPS)}")
    print(f"hand-written torchattacks loop: {t_hand:.2f} s (median of {args.repeats})")
    print(
        f"ellrobust eval:                 {t_ours:.2f} s (median of {args.repeats}; "
        f"compilation apart: {', '.join(f'{c:.2f}' for c in compiles)} s)"
    )
    print(f"wall-time ratio ellrobust / hand loop: {t_ours / t_hand:.3f}  (target ≤ 1.0 when clean accuracy < 100 %)")
    print(f"ideal work (steps × fwd+bwd + 1 fwd per attacked image, 1 clean fwd per image): {ideal:.2f} s")
    print(f"overhead beyond ideal: {(t_ours / ideal - 1) * 100:+.1f} %  (target ≤ 10 %)")
    print(
        f"for calibration, the hand loop against its own ideal ({ideal_hand:.2f} s): "
        f"{(t_hand / ideal_hand - 1) * 100:+.1f} %"
    )


if __name__ == "__main__":
    main()
