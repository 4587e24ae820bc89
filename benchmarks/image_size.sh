#!/usr/bin/env bash
# What the CPU image's Python layer weighs: the serving set it installs now (sentiserve[s3,load])
# against everything (sentiserve[all] with CPU PyTorch, what the image installed before the
# extras split). No Docker engine on the development machines, so this installs each set
# with pip into a folder and measures that folder: the layer the Dockerfile's pip install adds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip install -q --disable-pip-version-check --target "$work/serving" ".[s3,load]" 2>/dev/null
"$PY" -m pip install -q --disable-pip-version-check --target "$work/all" torch==2.13.0 ".[all]" 2>/dev/null
for set in serving all; do
  printf '%s\t%s MB\t%s packages\n' "$set" "$(du -sm "$work/$set" | cut -f1)" \
    "$(find "$work/$set" -maxdepth 1 -name '*.dist-info' | wc -l)"
done
echo "largest in the serving set:"
du -sm "$work/serving"/* | sort -n | tail -5
