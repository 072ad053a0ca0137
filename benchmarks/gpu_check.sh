#!/usr/bin/env bash
# The GPU check, under 10 minutes on one GPU: training speed of the method's U-Net at its 64x128x128
# input (bf16 autocast where supported, channels-last) and whole-volume inference speed; prints a table.
#   benchmarks/gpu_check.sh            (from the repository root, after `make install` with a CUDA build of torch)
# Without a GPU it says so and stops; `benchmarks/gpu_check.sh --device cpu --iterations 3 --volume 16 64 64`
# checks the script on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
PYTHONPATH=src timeout 600 "$PYTHON" benchmarks/gpu_check.py "$@"
