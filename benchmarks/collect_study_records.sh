#!/usr/bin/env bash
# Copy the small records of each study sweep (sweep.json, each run's result.json and metrics.jsonl,
# the first seed's inside.json; not checkpoints) from RUNS/<study> into results/<scale>/<study>, so tables and
# the report rebuild from the repository without retraining:
#   bash benchmarks/collect_study_records.sh [RUNS] [SCALE]
#   qnnlab sweep table results/cpu/tricks-mlp --reference full
set -euo pipefail
runs=${1:-/root/qnnlab-runs/studies}
scale=${2:-cpu}
dest="$(dirname "$0")/../results/$scale"
for sweep in "$runs"/*/; do
  [ -f "$sweep/sweep.json" ] || continue
  study=$(basename "$sweep")
  mkdir -p "$dest/$study"
  cp "$sweep/sweep.json" "$dest/$study/"
  (cd "$sweep" && find . -name result.json) | while read -r file; do  # finished runs only
    run=$(dirname "$file")
    mkdir -p "$dest/$study/$run"
    cp "$sweep/$run/result.json" "$sweep/$run/metrics.jsonl" "$dest/$study/$run/"
    if [ "$(basename "$run")" = seed0 ] && [ -f "$sweep/$run/inside.json" ]; then
      cp "$sweep/$run/inside.json" "$dest/$study/$run/"
    fi
  done
  echo "$study: $(find "$dest/$study" -name result.json | wc -l) records"
done
