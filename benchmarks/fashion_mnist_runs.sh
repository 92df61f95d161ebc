#!/usr/bin/env bash
# The full Fashion-MNIST runs whose accuracies README reports (issue: training results).
# Each run is resumable: a killed run continues from its last epoch checkpoint; a run that
# fails is reported and the others go on.
#   bash benchmarks/fashion_mnist_runs.sh [RUNS_DIR] [THREADS] [DEVICE]
# ONLY_MLP / ONLY_CNN choose a subset, e.g. ONLY_MLP="float bnn" ONLY_CNN="" (empty: none).
# PARALLEL=N trains N runs at once (on a 2-core CPU two 1-thread MLP runs train 1.35x more per
# hour than one 2-thread run; on a GPU several runs share the card). DATA_ROOT=DIR reads the
# data set from DIR instead of the usual places. EXTRA="--set limit_steps=5" is added to every run
# (smoke tests of this script).
set -uo pipefail
RUNS=${1:-runs/fashion-mnist}
THREADS=${2:-0}
DEVICE=${3:-cpu}
PARALLEL=${PARALLEL:-1}
if ! [[ $PARALLEL =~ ^[1-9][0-9]*$ ]]; then
  echo "PARALLEL=$PARALLEL: give how many runs train at once, a positive number" >&2
  exit 2
fi
QNNLAB=${QNNLAB:-qnnlab}
DATA=()
if [[ -n ${DATA_ROOT:-} ]]; then DATA=(--data-root "$DATA_ROOT"); fi
run() {  # recipe model epochs [extra args]
  local recipe=$1 model=$2 epochs=$3; shift 3
  "$QNNLAB" train --recipe "$recipe" --model "$model" --dataset fashion-mnist --epochs "$epochs" \
    --threads "$THREADS" --device "$DEVICE" --out "$RUNS/$recipe-$model" --resume --quiet "${DATA[@]}" "$@" \
    ${EXTRA:-} \
    || echo "run $recipe-$model failed (exit $?)" >&2
}
MLP_RUNS="float bnn binaryconnect bnn-shift dorefa xnor bwn qnn binaryconnect-stochastic fewmult lowprec2014 dropconnect ebp
  binaryconnect-paper bnn-paper fewmult-pow2-errors fewmult-ternary lowprec2014-forward lowprec2014-fixed lowprec2014-maxout
  qnn-grad6 dropconnect-all dropconnect-moments"
CNN_RUNS="float bnn xnor bwn dorefa"
queue=()
for recipe in ${ONLY_MLP-$MLP_RUNS}; do queue+=("$recipe mlp 25"); done
for recipe in ${ONLY_CNN-$CNN_RUNS}; do queue+=("$recipe cnn 15 --set augment=flip"); done
for job in "${queue[@]}"; do
  while (( $(jobs -rp | wc -l) >= PARALLEL )); do wait -n; done
  # shellcheck disable=SC2086  # each job is "recipe model epochs [args]"
  run $job &
done
wait
