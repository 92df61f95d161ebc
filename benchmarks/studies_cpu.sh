#!/usr/bin/env bash
# Every study at CPU scale, one after another, into RUNS/<study> (default /root/qnnlab-runs/studies).
# Resumable: rerun after a kill and each sweep skips finished runs and resumes interrupted ones.
# Then: bash benchmarks/collect_study_records.sh RUNS copies the small records into results/cpu/.
#   usage: bash benchmarks/studies_cpu.sh [RUNS] [JOBS]
set -u
runs=${1:-/root/qnnlab-runs/studies}
jobs=${2:-2}
qnnlab=${QNNLAB:-qnnlab}
# The MLP studies first: their runs take minutes, the CNNs' tens of minutes.
for study in ${STUDIES:-tricks-mlp sensitivity-mlp input-mlp recipes-mlp estimators-mlp width-mlp precision-dfxp-mlp \
             precision-fixed-mlp dorefa-mlp tricks-cnn sensitivity-cnn width-cnn}; do
  echo "== $study $(date -u +%FT%TZ)"
  $qnnlab sweep "cpu/$study" --out "$runs/$study" --jobs "$jobs" --quiet
done
