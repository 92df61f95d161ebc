#!/usr/bin/env bash
# The full Fashion-MNIST runs whose accuracies README reports (issue: training results).
# Each line is resumable: a killed run continues from its last epoch checkpoint; a run that
# fails is reported and the others go on.
#   bash benchmarks/fashion_mnist_runs.sh [RUNS_DIR] [THREADS] [DEVICE]
# ONLY_MLP / ONLY_CNN choose a subset, e.g. ONLY_MLP="float bnn" ONLY_CNN="" (empty: none).
set -uo pipefail
RUNS=${1:-runs/fashion-mnist}
THREADS=${2:-0}
DEVICE=${3:-cpu}
QNNLAB=${QNNLAB:-qnnlab}
run() {  # recipe model epochs [extra args]
  local recipe=$1 model=$2 epochs=$3; shift 3
  "$QNNLAB" train --recipe "$recipe" --model "$model" --dataset fashion-mnist --epochs "$epochs" \
    --threads "$THREADS" --device "$DEVICE" --out "$RUNS/$recipe-$model" --resume --quiet "$@" \
    || echo "run $recipe-$model failed (exit $?)" >&2
}
MLP_RUNS="float bnn binaryconnect bnn-shift dorefa xnor bwn qnn binaryconnect-stochastic fewmult lowprec2014 dropconnect ebp"
CNN_RUNS="float bnn xnor bwn dorefa"
for recipe in ${ONLY_MLP-$MLP_RUNS}; do run "$recipe" mlp 25; done
for recipe in ${ONLY_CNN-$CNN_RUNS}; do run "$recipe" cnn 15 --set augment=flip; done
