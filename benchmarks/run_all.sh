#!/usr/bin/env bash
# Run every benchmark once and print its figures (CPU by default; cuda runs the GPU variants).
# Usage: bash benchmarks/run_all.sh [cpu|cuda] [PATH to a local checkout of fra31/auto-attack]
# The CPU run takes about 35 minutes on 2 cores (AutoAttack and its reference: about 11 of them).
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
reference="${2:-}"
if [ "$device" = cuda ]; then scale=(--n 2000 --spsa-steps 10); aa=(--n 120); else scale=(); aa=(--n 60 --models deit-elliptical --no-alone); fi
echo "## bench_imagenet_scale"; python benchmarks/bench_imagenet_scale.py --device "$device" "${scale[@]}"
echo "## bench_attention"; python benchmarks/bench_attention.py --device "$device" --repeats 5
echo "## bench_autoattack"; python benchmarks/bench_autoattack.py --device "$device" "${aa[@]}" ${reference:+--reference "$reference"}
echo "## bench_pgd"; python benchmarks/bench_pgd.py --device "$device"
echo "## bench_collapse (deit-micro)"; python benchmarks/bench_collapse.py --device "$device" --repeats 31
echo "## bench_collapse (deit-tiny)"; python benchmarks/bench_collapse.py --device "$device" --model deit-tiny-elliptical --batch 16 --repeats 7
echo "## bench_corruptions"; python benchmarks/bench_corruptions.py
if [ "$device" = cpu ]; then echo "## bench_distributed"; python benchmarks/bench_distributed.py; fi
