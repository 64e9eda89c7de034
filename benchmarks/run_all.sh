#!/usr/bin/env bash
# Run every benchmark once and print its figures (CPU by default; pass --device cuda where it applies).
# Usage: bash benchmarks/run_all.sh [cpu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
echo "## bench_attention"; python benchmarks/bench_attention.py --device "$device"
echo "## bench_pgd"; python benchmarks/bench_pgd.py --device "$device"
echo "## bench_collapse (deit-micro)"; python benchmarks/bench_collapse.py --device "$device"
echo "## bench_collapse (deit-tiny)"; python benchmarks/bench_collapse.py --device "$device" --model deit-tiny-elliptical --batch 16 --repeats 7
echo "## bench_corruptions"; python benchmarks/bench_corruptions.py
if [ "$device" = cpu ]; then echo "## bench_distributed"; python benchmarks/bench_distributed.py; fi
