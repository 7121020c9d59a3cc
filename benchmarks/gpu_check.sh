#!/usr/bin/env bash
# The GPU check (issue 15): CUDA tests and GPU figures on a bare GPU machine, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh --prepare       # here, once, with pip access: build/gpu-carry
#   bash benchmarks/gpu_check.sh                 # on the GPU machine: $OUT/gpu.json, gpu.md, log
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # anywhere: every step on the CPU, smallest sizes
#
# The GPU machine has PyTorch with CUDA, numpy, scipy, pytest and no network, but no SimpleITK:
# --prepare downloads SimpleITK's wheel for its Python (3.12, x86-64), packs it small enough to
# travel with the repository (xz; see pack_wheel in gpu_bench.py) into build/gpu-carry; the
# tests' real volumes are in Testing/data, tracked, so they travel anyway. Name build/gpu-carry
# in the device call's carry list. No install is needed: the repository goes on PYTHONPATH
# (python -m CLADE works).
# All measuring is in benchmarks/gpu_bench.py; this script only sets up and calls it.
set -u
cd "$(dirname "$0")/.."
CARRY=${GPU_CHECK_CARRY:-build/gpu-carry}
PYTHON=${PYTHON:-python3}

case "${1:-}" in
--prepare)
    set -e
    VERSION=$($PYTHON -c "import SimpleITK; print(SimpleITK.Version_VersionString())")
    rm -rf "$CARRY" && mkdir -p "$CARRY/site" "$CARRY/wheel"
    $PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$CARRY/wheel" "SimpleITK==$VERSION"
    echo "packing the SimpleITK $VERSION wheel (xz -9: minutes on a few cores) ..."
    $PYTHON benchmarks/gpu_bench.py --pack-wheel "$CARRY"/wheel/*.whl "$CARRY/site"
    rm -rf "$CARRY/wheel"
    tracked=$(git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
    carried=$(du -sb "$CARRY" | cut -f1)
    echo "travels: repository $((tracked >> 20)) MiB + $CARRY $((carried >> 20)) MiB" \
        "(the limit is 64 MiB, untracked files not ignored count too)"
    exit 0
    ;;
--cpu-dry-run)
    DRY=--dry-run
    OUT=${OUT:-$(mktemp -d)}
    ;;
"")
    DRY=
    OUT=${OUT:-$PWD/gpu-check-out}
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh [--prepare | --cpu-dry-run]" >&2
    exit 2
    ;;
esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# SimpleITK: the packed tree from --prepare, else wheels in .whl (the guide's way), else the
# Python's own.
SITE=${GPU_CHECK_SITE:-/tmp/site}
if [ -d "$CARRY/site" ] && [ -z "$DRY" ]; then
    $PYTHON benchmarks/gpu_bench.py --unpack "$CARRY/site" "$SITE" || echo "unpacking SimpleITK failed" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
elif compgen -G ".whl/*.whl" >/dev/null && [ -z "$DRY" ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || echo "installing the wheels failed" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! $PYTHON -c "import SimpleITK" 2>/dev/null; then
    echo "SimpleITK does not import: run 'bash benchmarks/gpu_check.sh --prepare' where pip works" \
        "and carry $CARRY (the steps will fail and say so in $OUT/gpu.json)" >&2
fi

# gpu_bench.py keeps its own budget (450 s); this is the backstop if it hangs.
timeout --kill-after 10 470 $PYTHON benchmarks/gpu_bench.py --out "$OUT" $DRY
code=$?
echo "results in $OUT (exit $code)"
exit $code
