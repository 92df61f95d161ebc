#!/usr/bin/env bash
# The speed records of README's "On an Intel Xeon" section for this machine, each case run RUNS
# times (the hosts here are noisy: every run's rows are kept, README quotes their median):
# whole models against the strongest int8 (1 and 2 threads, and 2 beside a busy process; bnn-plus,
# with its real-valued Bi-Real stream, and bnn-plus-float-first, on 1 and 2 threads), the binary GEMMs against torch int8 and the popcount bound, and the batch-1 weight-only products
# against the read of their packed weights. Pause trainings first. PARTS chooses a subset of
# "models bnn-plus gemm" (all three unless given), e.g. PARTS=bnn-plus after a change to its ops.
#   bash benchmarks/speed_records.sh [OUT_DIR] [RUNS]
# README's tables are then `qnnlab bench table OUT_DIR/<files>.jsonl` (per case: median and range over the runs).
set -euo pipefail
OUT=${1:-results/cpu/bench/$(${PYTHON:-python} -c "from qnnlab.timing import cpu_name; print(cpu_name().split('(')[-1].rstrip(')'))")}
RUNS=${2:-3}
QNNLAB=${QNNLAB:-qnnlab}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS '$RUNS': give a positive count of runs per case, e.g. 3" >&2; exit 2; }
PARTS=${PARTS:-models bnn-plus gemm}
for p in $PARTS; do
  [[ $p =~ ^(models|bnn-plus|gemm)$ ]] || { echo "PARTS holds '$p': give some of models, bnn-plus, gemm" >&2; exit 2; }
done
part() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT"
records() {  # file, then the bench arguments: RUNS runs appended, the file replaced when all are done
  local file=$1; shift
  : >"$file.part"
  for _ in $(seq "$RUNS"); do "$QNNLAB" bench "$@" --json >>"$file.part"; done
  mv "$file.part" "$file"
}
if part models; then
  for model in mlp cnn; do
    for case in "1" "2" "2 --busy"; do
      read -r threads busy <<<"$case"
      # shellcheck disable=SC2086  # busy is empty or one option
      records "$OUT/model-$model-threads$threads${busy:+-busy}.jsonl" model --model "$model" --batch 1,100 --threads "$threads" $busy
    done
  done
fi
if part bnn-plus; then
  for recipe in bnn-plus bnn-plus-float-first; do
    for model in mlp cnn; do
      for threads in 1 2; do
        records "$OUT/model-$recipe-$model-threads$threads.jsonl" model --model "$model" --recipe "$recipe" --batch 1,100 --threads "$threads"
      done
    done
  done
fi
if part gemm; then
  for threads in 1 2; do
    records "$OUT/gemm-threads$threads.jsonl" gemm --sizes 1024,4096 --gemv 0 --bitserial 0 --threads "$threads"
    records "$OUT/gemv-threads$threads.jsonl" gemm --sizes 256 --gemv 4096,16384 --bitserial 0 --threads "$threads"
  done
fi
