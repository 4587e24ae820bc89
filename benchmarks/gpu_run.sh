#!/usr/bin/env bash
# The prepared GPU run, for a machine with an NVIDIA GPU (see docs/gpu.md): it installs the wheels
# carried in .whl/ (`make gpu-wheels` downloads them; .whl/ is ignored by git), runs
# benchmarks/gpu_run.py and leaves benchmarks/RESULTS-gpu.md in $OUT (or in benchmarks/).
# SMOKE=1 rehearses it on the CPU (CI runs that).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
python=${PYTHON:-python3}
out=${OUT:-benchmarks}
args=(--out "$out/RESULTS-gpu.md")
if [ "${SMOKE:-0}" = 1 ]; then args+=(--smoke); fi
"$python" benchmarks/gpu_run.py "${args[@]}"
