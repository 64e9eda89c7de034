"""Wall time of the same evaluation in 1 process and in 2 torchrun processes (gloo on the CPU).

On a 2-core machine the gain is bounded: each process gets one core instead of two intra-op threads,
so the speed-up comes only from better parallel efficiency of whole forward/backward passes. Both
runs write separate folders; the script checks that their tables are identical.

    python benchmarks/bench_distributed.py [--n 200] [--nproc 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    eval_args = [
        "eval",
        "-m",
        "deit-elliptical",
        "-m",
        "deit",
        "--attack",
        "pgd",
        "--eps",
        "2/255,8/255",
        "-n",
        str(args.n),
        "--batch-size",
        "32",
        "--no-sanity",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        one_env = {**os.environ}
        multi_env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // args.nproc))}
        t1 = timed([sys.executable, "-m", "ellrobust", *eval_args, "--out", f"{tmp}/one"], one_env)
        tn = timed(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={args.nproc}",
                "-m",
                "ellrobust",
                *eval_args,
                "--out",
                f"{tmp}/multi",
            ],
            multi_env,
        )
        same = Path(f"{tmp}/one/results.csv").read_bytes() == Path(f"{tmp}/multi/results.csv").read_bytes()
    print(f"machine: {cores} CPU cores; PGD-10 at 2 budgets, 2 models, {args.n} images")
    print(f"1 process  ({os.environ.get('OMP_NUM_THREADS', 'default')} threads): {t1:.1f} s")
    print(f"{args.nproc} processes ({multi_env['OMP_NUM_THREADS']} thread each):  {tn:.1f} s")
    print(f"speed-up: {t1 / tn:.2f}×; identical results tables: {same}")


if __name__ == "__main__":
    main()
