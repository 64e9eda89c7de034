#!/usr/bin/env bash
# Run every benchmark once, print its figures, and end with each benchmark's outcome (CPU by default).
#
#   bash benchmarks/run_all.sh [cpu|cuda] [PATH to a local checkout of fra31/auto-attack]
#
# On a machine without the package index (a GPU machine that has torch, timm, pandas, typer, rich and
# scikit-image but not torchattacks or imagecorruptions-imaug), prepare the wheels once where pip
# reaches PyPI, in the repo's root:
#
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl torchattacks==3.5.1 imagecorruptions-imaug==1.1.5
#
# (.whl/ is git-ignored; both are pure-Python wheels.) This script then installs them and the project
# into $ELLROBUST_SITE (default /tmp/ellrobust-site) with `pip install --no-deps --no-build-isolation
# --target` and puts that folder first on PYTHONPATH, so nothing is fetched. Without .whl/ it uses the
# Python environment as it is (e.g. the venv of `pip install -e .`).
#
# A benchmark that fails does not stop the others: its exit status is reported at the end, and the
# script exits non-zero if any failed. Every timed figure excludes compile warm-up (each benchmark
# warms up before its clocks; eval runs report compile time apart, see run.json "attention").
# The CPU run takes about 80 minutes on 2 cores (AutoAttack and its reference: about 11 of them; the patch
# attacks at n = 200 about 12, Patch-Fool against its official transcription about 25).
set -uo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
reference="${2:-}"
python="${PYTHON:-python3}"

if [ -d .whl ]; then
  site="${ELLROBUST_SITE:-/tmp/ellrobust-site}"
  echo "## installing the project and .whl/*.whl into $site (no index, no dependencies)"
  "$python" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$site" .whl/*.whl . \
    || { echo "installing from .whl/ failed"; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$python" -c "import ellrobust, torchattacks, imagecorruptions" 2>/dev/null; then
  echo "ellrobust, torchattacks or imagecorruptions cannot be imported: pip install -e . here, or prepare .whl/ (see the top of $0)"
  exit 2
fi

if [ "$device" = cuda ]; then scale=(--n 2000 --spsa-steps 10); aa=(--n 120); else scale=(); aa=(--n 60 --models deit-elliptical --no-alone); fi
outcomes=()
run() {  # run NAME COMMAND...: print the benchmark's output, remember how it ended
  local name="$1"; shift
  echo "## $name"
  local start=$SECONDS
  "$@"
  local status=$?
  if [ $status -eq 0 ]; then outcomes+=("$name: ok ($((SECONDS - start)) s)"); else outcomes+=("$name: FAILED (exit $status)"); fi
}
run bench_imagenet_scale "$python" benchmarks/bench_imagenet_scale.py --device "$device" "${scale[@]}"
run bench_attention "$python" benchmarks/bench_attention.py --device "$device" --repeats 5
run bench_autoattack "$python" benchmarks/bench_autoattack.py --device "$device" "${aa[@]}" ${reference:+--reference "$reference"}
run bench_pgd "$python" benchmarks/bench_pgd.py --device "$device"
run "bench_collapse (deit-micro)" "$python" benchmarks/bench_collapse.py --device "$device" --repeats 31
run "bench_collapse (deit-tiny)" "$python" benchmarks/bench_collapse.py --device "$device" --model deit-tiny-elliptical --batch "$([ "$device" = cuda ] && echo 128 || echo 16)" --repeats 7
run bench_corruptions "$python" benchmarks/bench_corruptions.py
run bench_min_norm "$python" benchmarks/bench_min_norm.py --device "$device"
run "bench_min_norm (images needed)" "$python" benchmarks/bench_min_norm.py --device "$device" --images-needed
run holm_power "$python" benchmarks/holm_power.py
run primary_power "$python" benchmarks/primary_power.py
run bench_patch_attacks "$python" benchmarks/bench_patch_attacks.py 200
run patch_fool_official "$python" benchmarks/patch_fool_official.py 200
if [ "$device" = cpu ]; then run bench_distributed "$python" benchmarks/bench_distributed.py; fi

echo "## outcomes ($device)"
failed=0
for line in "${outcomes[@]}"; do
  echo "  $line"
  case "$line" in *FAILED*) failed=1 ;; esac
done
exit $failed
