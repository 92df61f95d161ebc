#!/usr/bin/env bash
# bnn-plus at full size on Fashion-MNIST, seed 0, trained in two steps within the training issue's epoch budget:
# bnn-plus-activations-first (binary activations, real weights, Bi-Real shortcuts), then bnn-plus started from it.
# MLP 784-3x2048-10: 13 + 12 epochs (25 in all); CNN: 8 + 7 epochs with flips (15 in all). Resumable.
#   bash benchmarks/bnn_plus_runs.sh [RUNS_DIR] [THREADS] [mlp|cnn] [TRAIN OPTIONS...]
# Train options after the model go to both steps, e.g. --set augment=shift; TAG=-shift names the runs
# bnn-plus-activations-first-mlp-shift and bnn-plus-mlp-shift. SECOND=RECIPE trains another second step
# (e.g. bnn-plus-float-first) from the same first step, as RUNS_DIR/RECIPE-MODEL$TAG.
set -euo pipefail
RUNS=${1:-runs/fashion-mnist}
THREADS=${2:-0}
MODEL=${3:-mlp}
shift $(( $# < 3 ? $# : 3 ))
TAG=${TAG:-}
SECOND=${SECOND:-bnn-plus}
QNNLAB=${QNNLAB:-qnnlab}
case $MODEL in
  mlp) first=13 second=12 extra=() ;;
  cnn) first=8 second=7 extra=(--set augment=flip) ;;
  *) echo "model '$MODEL': give mlp or cnn" >&2; exit 2 ;;
esac
step1="$RUNS/bnn-plus-activations-first-$MODEL$TAG"
"$QNNLAB" train --recipe bnn-plus-activations-first --model "$MODEL" --dataset fashion-mnist --epochs "$first" \
  --threads "$THREADS" --out "$step1" --resume --quiet "${extra[@]}" "$@"
"$QNNLAB" train --recipe "$SECOND" --model "$MODEL" --dataset fashion-mnist --epochs "$second" \
  --threads "$THREADS" --out "$RUNS/$SECOND-$MODEL$TAG" --resume --quiet --set "init_from=$step1" "${extra[@]}" "$@"
