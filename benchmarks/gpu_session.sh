#!/usr/bin/env bash
# One prepared call for a lent GPU machine (the `device` tool): train Fashion-MNIST runs side by
# side on the one GPU, then bring back a results table and the runs' metrics in two files (the
# tool returns at most 8). The machine has torch but no network, so the data travel along:
#   here, once:  echo /.data/ >> .git/info/exclude; mkdir -p .data
#                cp -r /usr/share/datasets/fashion-mnist .data/
#   device run:  carry [".data"], command
#                bash benchmarks/gpu_session.sh SECONDS PARALLEL   (ONLY_MLP / ONLY_CNN as usual)
# Runs still going after SECONDS are stopped; their metrics so far come back too. Checkpoints do
# not come back (too large), so a stopped run restarts from scratch next time.
set -uo pipefail
SECONDS_LEFT=${1:-480}
PARALLEL=${2:-6}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
launcher=$(mktemp)
PYTHON=${PYTHON:-python3}
printf '#!/bin/sh\nexec %s -m qnnlab.cli "$@"\n' "$PYTHON" > "$launcher"
chmod +x "$launcher"
runs=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
QNNLAB=$launcher PARALLEL=$PARALLEL DATA_ROOT=${DATA_ROOT:-.data/fashion-mnist} \
  timeout "$SECONDS_LEFT" bash benchmarks/fashion_mnist_runs.sh "$runs" 2 "${DEVICE:-cuda}" \
  2>&1 | tail -n 40 > "$OUT/log.txt"
"$launcher" report "$runs" > "$OUT/report.md" 2>&1
tar czf "$OUT/runs.tgz" -C "$runs" --exclude checkpoint.safetensors .
cat "$OUT/report.md"
