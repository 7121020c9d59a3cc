#!/usr/bin/env bash
# Create a separate virtual environment with ECLARE, the comparison method of the quality table.
#
# ECLARE (PyPI "eclare", GPL-3.0) is only ever run as an external command from this venv; CLADE
# never imports, depends on or ships it. The venv lives under runs/ (gitignored).
#
# Usage:  bash benchmarks/eclare_env.sh [VENV_DIR]     (default: <repo>/runs/eclare-venv)
#
# torch is installed FIRST and pinned to 2.13.0: pip then takes the CPU wheel on disk (the
# machine's find-links), and eclare's own "torch" requirement is already satisfied. An unpinned
# torch would pull a multi-GB CUDA build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="${1:-$repo/runs/eclare-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "Creating $venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet eclare "torch==2.13.0"

echo
echo "Installed:"
"$venv/bin/python" -m pip show eclare torch 2>/dev/null | grep -E '^(Name|Version|License):'
echo
if [ -x "$venv/bin/run-eclare" ]; then
    echo "ECLARE command: $venv/bin/run-eclare"
    "$venv/bin/run-eclare" --help
else
    echo "No run-eclare entry point; console scripts installed:" >&2
    ls "$venv/bin" >&2
    exit 1
fi
