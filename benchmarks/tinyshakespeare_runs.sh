#!/usr/bin/env bash
# Character LSTM on Tiny Shakespeare: validation bits per character for float, 4-bit and 2-bit
# weights and hidden state (QNN paper: 4 bits match float). Resumable like fashion_mnist_runs.sh.
#   bash benchmarks/tinyshakespeare_runs.sh [RUNS_DIR] [THREADS] [DEVICE]
set -uo pipefail
RUNS=${1:-runs/tinyshakespeare}
THREADS=${2:-0}
DEVICE=${3:-cpu}
QNNLAB=${QNNLAB:-qnnlab}
run() {  # name rules
  "$QNNLAB" train --recipe qnn-lstm --threads "$THREADS" --device "$DEVICE" --out "$RUNS/$1" --resume --quiet \
    --set "rules=$2" || echo "run $1 failed (exit $?)" >&2
}
run lstm-float "[]"
run lstm-4bit "[{match: LSTM, weight: 'dorefa_w:4', state: 'int:bits=4'}]"
run lstm-2bit "[{match: LSTM, weight: 'dorefa_w:2', state: 'int:bits=2'}]"
