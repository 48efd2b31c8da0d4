#!/usr/bin/env bash
# The GPU check of issue 26 (benchmarks/gpu_check.py says what it prints), on one lent GPU, in
# under 5 minutes. Run from anywhere: `benchmarks/gpu_check.sh [gpu_check.py options]`.
# PYTHON picks the interpreter (default: the repository's .venv, else python3). Without a GPU
# it exits 2 and says so, before anything is built.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or lists none): this check needs one" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# One CPU thread per loader worker, as the harness's workers run; the main process keeps torch's
# default. The whole check is bounded: a hang must not eat the lent GPU's time.
exec timeout --signal=INT --kill-after=10 290 "$PYTHON" benchmarks/gpu_check.py "$@"
