"""ImageNet-scale evaluation through the CLI, each figure beside its ideal.

It builds its own ImageNet-style folder, so nothing needs downloading: N smooth random 256 px JPEGs in
1000 class folders. A seeded, randomly initialised DeiT-Tiny labels them: about half of the images get
the class the model predicts (they are attacked), the rest another class. The same weights are saved
and evaluated as both ``deit-tiny-elliptical`` and ``deit-tiny``. (Class folders left without an
image stay empty: ellrobust's image-folder loader keeps an empty class's index, so no filler images
are needed to keep the 1000 labels.)

Then it runs ``ellrobust eval`` (subprocesses, as a user would), and prints:

* **startup**: import time of the CLI, and from run.json the dataset indexing + digest, the decoding
  of the selected images into the run's store, and model loading;
* **PGD**: the attack and clean units' time against the ideal ``attacked images × steps × measured
  (forward + input gradient) per image + clean forwards``;
* **SPSA** (the paper's 128 samples; few steps at small N): its units' time against ``attacked
  images × 2 × samples × steps × measured forward per image``;
* **corruptions** (15 × 5): images generated per second of the corruption units against ``cores ×``
  the warm single-core rate of ``imagecorruptions`` on the same images (measured here first);
* **collapse**: the collapse units' time against one forward pass of the same images.

Unit times are the engine's own (run.json ``units[].seconds``) minus the time the units spent compiling
the elliptical attention (``compile_seconds``, printed apart); every ideal is measured after warm-up.

    python benchmarks/bench_imagenet_scale.py                       # CPU, small N
    python benchmarks/bench_imagenet_scale.py --device cuda --n 2000 --spsa-steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ellrobust.core.allocator import keep_freed_memory
from ellrobust.core.precision import precision_scope
from ellrobust.corruptions import CorruptionSet, names_in
from ellrobust.models import load_model
from ellrobust.models.checkpoint import save_safetensors

CLASSES = 1000
ARCH = "deit-tiny"


def build_folder(root: Path, n: int, seed: int, device: str) -> Path:
    """The image folder and the weights file whose predictions label it; returns the weights' path."""
    from PIL import Image

    from ellrobust.data import deit_eval_transform

    rng = np.random.default_rng(seed)
    transform = deit_eval_transform(224)
    torch.manual_seed(seed)
    model = load_model(ARCH, num_classes=CLASSES, dataset="imagefolder", default_arch=ARCH, img_size=224).to(device)
    weights = save_safetensors(model.state_dict(), root / "weights.safetensors")
    staging = root / "staging"
    staging.mkdir(parents=True)
    images = []
    for i in range(n):
        low = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)  # smooth: a few random colours, up-sampled
        image = Image.fromarray(low).resize((256, 256), Image.BICUBIC)
        path = staging / f"img{i:05d}.JPEG"
        image.save(path, quality=90)
        images.append(path)
    with torch.no_grad():
        predictions = []
        for start in range(0, n, 64):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images[start : start + 64]]).to(
                device
            )
            predictions += model(batch).argmax(1).tolist()
    val = root / "val"
    for k in range(CLASSES):
        (val / f"n{k:08d}").mkdir(parents=True)
    for path, predicted in zip(images, predictions, strict=True):
        label = predicted if rng.random() < 0.5 else int((predicted + rng.integers(1, CLASSES)) % CLASSES)
        path.rename(val / f"n{label:08d}" / path.name)
    return weights


def per_image_step(model, x: torch.Tensor, y: torch.Tensor, precision: str, repeats: int) -> float:
    """Seconds per image of one attack step: forward and the gradient with respect to the input only."""
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(repeats + 2):
        xi = x.clone().requires_grad_(True)
        _sync(x.device)
        start = time.perf_counter()
        with precision_scope(precision, x.device):  # the backward too: TF32 switches are read when it runs
            loss = loss_fn(model(xi).float(), y)
            torch.autograd.grad(loss, xi)
        _sync(x.device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(x)


@torch.no_grad()
def per_image_forward(model, x: torch.Tensor, precision: str, repeats: int) -> float:
    times = []
    for i in range(repeats + 2):
        _sync(x.device)
        start = time.perf_counter()
        with precision_scope(precision, x.device):
            model(x)
        _sync(x.device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(x)


def spsa_alone(
    model, images: int, steps: int, chunk: int, precision: str, device: torch.device, repeats: int = 2
) -> list[float]:
    """SPSA (128 samples) on one batch, each run divided by the forward passes it makes, timed right after it.

    The eval's unit time is compared with a forward rate measured minutes apart; this ratio is the
    attack's own cost beyond its forward passes, with the machine's drift taken out.
    """
    from ellrobust.attacks.spsa import SPSA

    x = torch.rand(images, 3, 224, 224, device=device)
    y = torch.randint(0, CLASSES, (images,), device=device)
    probe = torch.rand(min(chunk, 2 * 128 * images), 3, 224, 224, device=device)
    ratios = []
    for _ in range(repeats):
        attack = SPSA(model, eps=1 / 255, delta=0.01, lr=0.01, steps=steps, samples=128, max_batch_size=64, seed=0)
        _sync(device)
        start = time.perf_counter()
        attack.run(x, y, precision=precision)
        _sync(device)
        seconds = time.perf_counter() - start
        ratios.append(seconds / (per_image_forward(model, probe, precision, 1) * 2 * 128 * steps * images))
    return ratios


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def single_core_rate(folder: Path, images: int, severities: tuple[int, ...]) -> float:
    """Warm single-core corruptions per second over the 15 benchmark corruptions (one process, one thread)."""
    code = f"""
import time, numpy as np, torch, cv2
from threadpoolctl import threadpool_limits
torch.set_num_threads(1); cv2.setNumThreads(1); threadpool_limits(1)
from ellrobust.data import load_dataset
from ellrobust.corruptions import CorruptionSet, names_in
from ellrobust.corruptions.generate import corrupt_image, to_uint8, warm_up
data = load_dataset("imagefolder", root={str(folder)!r})
pixels = [to_uint8(data.dataset[i][0]) for i in range({images})]
for name in names_in(CorruptionSet.BENCHMARK):
    for s in {severities!r}:
        warm_up(name, s, "imagenet-c", 224)
        corrupt_image(pixels[0], name, s, 0, "imagenet-c")
start = time.perf_counter(); count = 0
for name in names_in(CorruptionSet.BENCHMARK):
    for s in {severities!r}:
        for k, image in enumerate(pixels):
            corrupt_image(image, name, s, k, "imagenet-c"); count += 1
print(count / (time.perf_counter() - start))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def pool_rate(folder: Path, images: int, severities: tuple[int, ...], workers: int) -> float:
    """Corruptions per second through the engine's own generation path, without models.

    The selected images decoded into an :class:`~ellrobust.data.image_store.ImageStore`, one
    :class:`~ellrobust.core.workers.WorkerPool` of ``workers`` processes forked after the warm-up, and one
    :class:`~ellrobust.corruptions.generate.GenerateTask` per (corruption, severity, image), streamed as
    the corruption stage streams them. This is the rate the models can be fed at, whatever they cost.
    """
    code = f"""
import tempfile, time
from pathlib import Path
from ellrobust.data import load_dataset
from ellrobust.data.image_store import allocate, fill, plan_for
from ellrobust.corruptions import CorruptionSet, names_in
from ellrobust.corruptions.generate import GenerateTask, warm_up
from ellrobust.core.workers import WorkerPool
data = load_dataset("imagefolder", root={str(folder)!r})
indices = list(range({images}))
names = names_in(CorruptionSet.BENCHMARK)
for name in names:
    for s in {severities!r}:
        warm_up(name, s, "imagenet-c", 224)
store, todo = allocate(data.dataset, indices, data.digest, "uint8", \
plan_for(None, Path(tempfile.mkdtemp()), None, shared_file=False))
with WorkerPool({workers}, {{"dataset": data.dataset, "store": store, "indices": indices}}) as pool:
    fill(store, todo, pool)
    tasks = [GenerateTask(p, name, s, 1000 * p + s, "imagenet-c") \
for name in names for s in {severities!r} for p in range({images})]
    list(pool.run(tasks[: {workers} or 1]))  # every worker has run once
    start = time.perf_counter()
    count = sum(1 for _ in pool.run(tasks))
print(count / (time.perf_counter() - start))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_eval(args: list[str], out: Path, device: str) -> dict:
    """One ``ellrobust eval`` through the CLI; returns its run.json and the command's wall time."""
    cmd = [
        sys.executable,
        "-m",
        "ellrobust",
        "eval",
        *args,
        "--device",
        device,
        "--out",
        str(out),
        "--no-sanity",
        "--json",
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"eval failed:\n{done.stderr[-3000:]}")
    meta = json.loads((out / "run.json").read_text())
    meta["command_s"] = wall
    return meta


def unit_seconds(meta: dict, predicate) -> float:
    """Seconds of the units ``predicate`` selects, without the time they spent compiling."""
    return sum(u.get("seconds", 0.0) - u.get("compile_seconds", 0.0) for u in meta["units"] if predicate(u))


def compile_note(meta: dict) -> str:
    attention = meta.get("attention", {})
    return (
        f"attention {'compiled' if attention.get('compiled') else 'eager'}: {attention.get('graphs', 0)} graphs, "
        f"{attention.get('compile_seconds', 0.0):.1f} s compiling (not counted)"
    )


def main() -> None:
    keep_freed_memory()  # the allocation policy of the CLI's process, so the figures are the CLI's
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--n", type=int, default=64, help="images in the folder (the PGD and collapse runs use all of them)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 32 on the CPU")
    parser.add_argument("--steps", type=int, default=5, help="PGD steps")
    parser.add_argument("--eps", default="1/255,2/255")
    parser.add_argument("--precision", default="fp32", help="precision of the PGD and SPSA iterations")
    parser.add_argument("--spsa-n", type=int, default=None, help="images of the SPSA run (default: N/4)")
    parser.add_argument("--spsa-steps", type=int, default=1, help="SPSA steps (the paper: 40)")
    parser.add_argument(
        "--corruption-n", type=int, default=16, help="images of the corruption run (15 corruptions × 5 severities)"
    )
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--keep", type=Path, default=None, help="build the folder here and keep it (default: a temporary folder)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch_size or (128 if device.type == "cuda" else 32)
    spsa_n = args.spsa_n or max(8, args.n // 4)
    root = Path(tempfile.mkdtemp()) if args.keep is None else args.keep
    cores = len(os.sched_getaffinity(0))
    print(
        f"device {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}; {cores} cores; "
        f"torch {torch.__version__}; "
        f"N {args.n}; batch {batch}; precision {args.precision}"
    )

    tick = time.perf_counter()
    weights = build_folder(root, args.n, seed=0, device=args.device)
    print(f"built {args.n} JPEGs in {CLASSES} class folders in {time.perf_counter() - tick:.1f} s")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ellrobust.cli"], check=True)
    import_s = time.perf_counter() - start
    models = ["-m", f"{ARCH}-elliptical", "-c", str(weights), "-m", ARCH, "-c", str(weights)]
    common = [
        "--data",
        "imagefolder",
        "--data-root",
        str(root / "val"),
        "--batch-size",
        str(batch),
        "--workers",
        args.workers,
    ]

    # --- PGD -----------------------------------------------------------------------------------------
    pgd = run_eval(
        [
            *common,
            *models,
            "--attack",
            "pgd",
            "--steps",
            str(args.steps),
            "--eps",
            args.eps,
            "--precision",
            args.precision,
        ],
        root / "pgd",
        args.device,
    )
    startup = pgd["startup"]
    print("\n## startup")
    print(f"import of the CLI (python -c 'import ellrobust.cli'): {import_s:.2f} s")
    print(
        f"index + digest {startup['index_s']:.2f} s; decode {startup['decoded_images']} images into the store "
        f"({startup['workers']} workers) {startup['decode_s']:.2f} s; load models {startup['models_s']:.2f} s"
    )
    print(
        f"first unit starts after {startup['index_s'] + startup['decode_s'] + startup['models_s']:.2f} s of the run "
        f"(whole command {pgd['command_s']:.1f} s)"
    )

    model = load_model(
        ARCH + "-elliptical",
        checkpoint=weights,
        num_classes=CLASSES,
        dataset="imagefolder",
        default_arch=ARCH,
        img_size=224,
    ).to(device)
    steps_s, forwards_s = {}, {}

    def step_at(size: int) -> float:
        """Seconds of one attack step on a batch of ``size`` images, as the units ran them."""
        if size not in steps_s:
            x = torch.rand(size, 3, 224, 224, device=device)
            y = torch.randint(0, CLASSES, (size,), device=device)
            steps_s[size] = per_image_step(model, x, y, args.precision, args.repeats) * size
        return steps_s[size]

    def forward_at(size: int, precision: str = "fp32") -> float:
        if (size, precision) not in forwards_s:
            forwards_s[(size, precision)] = (
                per_image_forward(model, torch.rand(size, 3, 224, 224, device=device), precision, args.repeats) * size
            )
        return forwards_s[(size, precision)]

    def batch_sizes(images: int) -> list[int]:
        return [min(batch, images - start) for start in range(0, images, batch)]

    attack_units = [u for u in pgd["units"] if " pgd " in f" {u['label']} "]
    attacked = sum(u["n_attacked"] for u in attack_units)
    ideal_attack = sum(args.steps * step_at(b) for u in attack_units for b in batch_sizes(u["n_attacked"]))
    ideal_clean = 2 * sum(forward_at(b) for b in batch_sizes(args.n))
    measured = unit_seconds(pgd, lambda u: " pgd " in f" {u['label']} " or u["label"].endswith(" clean"))
    ideal = ideal_attack + ideal_clean
    print("\n## PGD (both models, every budget)")
    print(
        f"measured step at batch {batch}: {step_at(batch) / batch * 1e3:.2f} ms/image; "
        f"clean forward {forward_at(batch) / batch * 1e3:.2f} ms/image"
    )
    print(
        f"unit time {measured:.2f} s vs ideal {ideal:.2f} s ({attacked} image-budgets × {args.steps} steps "
        "at the units' batch sizes "
        f"+ {2 * args.n} clean forwards): {measured / ideal:.3f} × ideal (target ≤ 1.10); {compile_note(pgd)}"
    )

    # --- SPSA ----------------------------------------------------------------------------------------
    spsa = run_eval(
        [
            *common,
            *models,
            "--n",
            str(spsa_n),
            "--attack",
            "spsa",
            "--samples",
            "128",
            "--steps",
            str(args.spsa_steps),
            "--eps",
            args.eps.split(",")[0],
            "--precision",
            args.precision,
        ],
        root / "spsa",
        args.device,
    )
    chunk = max((u.get("spsa_images_per_forward", 0) for u in spsa["units"]), default=0) or batch
    probe = min(chunk, 256)  # beyond a few hundred images a forward pass costs the same per image
    spsa_forward = forward_at(probe, args.precision) / probe
    attacked = sum(u.get("n_attacked", 0) for u in spsa["units"] if " spsa " in f" {u['label']} ")
    ideal = attacked * 2 * 128 * args.spsa_steps * spsa_forward
    measured = unit_seconds(spsa, lambda u: " spsa " in f" {u['label']} ")
    print("\n## SPSA (128 samples)")
    print(
        f"images per forward pass the attack used: {chunk}; forward {spsa_forward * 1e3:.2f} ms/image at batch {probe}"
    )
    print(
        f"unit time {measured:.2f} s vs ideal {ideal:.2f} s ({attacked} images × 2 × 128 × {args.spsa_steps} steps): "
        f"{measured / ideal:.3f} × ideal (target ≤ 1.10); {compile_note(spsa)}"
    )
    alone = spsa_alone(model, max(1, attacked // 2), args.spsa_steps, chunk, args.precision, device)
    print(
        f"the attack alone on {max(1, attacked // 2)} images, each run beside the same forward passes timed alone "
        f"(this machine's speed drifts between moments): {', '.join(f'{r:.3f}' for r in alone)} × its forward passes"
    )

    # --- corruptions ---------------------------------------------------------------------------------
    severities = (1, 2, 3, 4, 5)
    rate = single_core_rate(root / "val", min(args.corruption_n, 8), severities)
    corr = run_eval(
        [
            *common,
            *models,
            "--n",
            str(args.corruption_n),
            "--attack",
            "none",
            "--corruption",
            "all",
            "--severity",
            "1-5",
        ],
        root / "corr",
        args.device,
    )
    generated = sum(u.get("generated_images", 0) for u in corr["units"])
    seconds = unit_seconds(corr, lambda u: "generated_images" in u)
    model_s = sum(u.get("model_seconds", 0.0) for u in corr["units"])
    achieved = generated / seconds
    print(
        f"\n## corruptions ({len(names_in(CorruptionSet.BENCHMARK))} × {len(severities)}, "
        f"{args.corruption_n} images, {corr['startup']['workers']} workers)"
    )
    print(f"warm single-core rate {rate:.1f} images/s; ideal with {cores} cores {cores * rate:.1f} images/s")
    pooled = pool_rate(root / "val", args.corruption_n, severities, corr["startup"]["workers"])
    print(
        f"generation alone (the run's store, worker pool and tasks; no models): {pooled:.1f} images/s = "
        f"{pooled / (cores * rate):.2f} × cores × single-core rate (target ≥ 0.8)"
    )
    print(
        f"in eval: generated {generated} images in {seconds:.2f} s of corruption units, "
        f"{model_s:.2f} s of it in the models' forward passes "
        f"({achieved:.1f} images/s = {achieved / (cores * rate):.2f} × cores × single-core rate; "
        "the models share these cores)"
    )

    # --- collapse ------------------------------------------------------------------------------------
    col = run_eval([*common, *models, "--attack", "none", "--collapse"], root / "collapse", args.device)
    measured = unit_seconds(col, lambda u: u["label"].endswith(" collapse"))
    ideal = ideal_clean
    print("\n## collapse (token cosine, attention entropy, effective rank; both models)")
    print(
        f"unit time {measured:.2f} s vs one forward pass of the images {ideal:.2f} s: "
        f"{measured / ideal:.2f} × (target ≤ 1.5); {compile_note(col)}"
    )
    if args.keep is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
