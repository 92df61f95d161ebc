#!/usr/bin/env bash
# Character LSTM on Tiny Shakespeare: validation bits per character for float, 4-bit and 2-bit
# weights and hidden state (QNN paper: 4 bits match float). Resumable like fashion_mnist_runs.sh.
#   bash benchmarks/tinyshakespeare_runs.sh [RUNS_DIR] [THREADS] [DEVICE]
# The recipe's size (2 x 512 LSTM, 20 epochs) takes about 4 hours per run on one CPU core;
# HIDDEN=256 EPOCHS=10 is the CPU-sized comparison (about 30 minutes per run on one core).
set -uo pipefail
RUNS=${1:-runs/tinyshakespeare}
THREADS=${2:-0}
DEVICE=${3:-cpu}
HIDDEN=${HIDDEN:-512}
EPOCHS=${EPOCHS:-20}
QNNLAB=${QNNLAB:-qnnlab}
SHARED="$(dirname "$0")/../../shared/data/tinyshakespeare"  # the corpus beside a developer's checkout
DATA_ROOT=${DATA_ROOT:-$( [ -f "$SHARED/input.txt" ] && echo "$SHARED")}
run() {  # name rules
  "$QNNLAB" train --recipe qnn-lstm --threads "$THREADS" --device "$DEVICE" --epochs "$EPOCHS" \
    ${DATA_ROOT:+--data-root "$DATA_ROOT"} \
    --set "model_options={embed: 128, hidden: $HIDDEN, layers: 2, dropout: 0.2}" \
    --out "$RUNS/$1-h$HIDDEN-e$EPOCHS" --resume --quiet --set "rules=$2" || echo "run $1 failed (exit $?)" >&2
}
run lstm-float "[]"
run lstm-4bit "[{match: LSTM, weight: 'dorefa_w:4', state: 'int:bits=4'}]"
run lstm-2bit "[{match: LSTM, weight: 'dorefa_w:2', state: 'int:bits=2'}]"
