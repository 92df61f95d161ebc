#!/usr/bin/env bash
# The speed records of README's "On an Intel Xeon" section for this machine, each case run RUNS
# times (the hosts here are noisy: every run's rows are kept, README quotes their median):
# whole models against the strongest int8 (1 and 2 threads, and 2 beside a busy process; bnn-plus,
# with its real-valued Bi-Real stream, on 1 and 2 threads), the binary GEMMs against torch int8 and the popcount bound, and the batch-1 weight-only products
# against the read of their packed weights. Pause trainings first.
#   bash benchmarks/speed_records.sh [OUT_DIR] [RUNS]
set -euo pipefail
OUT=${1:-results/cpu/bench/$(${PYTHON:-python} -c "from qnnlab.timing import cpu_name; print(cpu_name().split('(')[-1].rstrip(')'))")}
RUNS=${2:-3}
QNNLAB=${QNNLAB:-qnnlab}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS '$RUNS': give a positive count of runs per case, e.g. 3" >&2; exit 2; }
mkdir -p "$OUT"
for model in mlp cnn; do
  for case in "1" "2" "2 --busy"; do
    read -r threads busy <<<"$case"
    file="$OUT/model-$model-threads$threads${busy:+-busy}.jsonl"
    : >"$file.part"
    for _ in $(seq "$RUNS"); do
      "$QNNLAB" bench model --model "$model" --batch 1,100 --threads "$threads" $busy --json >>"$file.part"
    done
    mv "$file.part" "$file"
  done
done
for model in mlp cnn; do
  for threads in 1 2; do
    file="$OUT/model-bnn-plus-$model-threads$threads.jsonl"
    : >"$file.part"
    for _ in $(seq "$RUNS"); do
      "$QNNLAB" bench model --model "$model" --recipe bnn-plus --batch 1,100 --threads "$threads" --json >>"$file.part"
    done
    mv "$file.part" "$file"
  done
done
for threads in 1 2; do
  file="$OUT/gemm-threads$threads.jsonl"
  : >"$file.part"
  for _ in $(seq "$RUNS"); do
    "$QNNLAB" bench gemm --sizes 1024,4096 --gemv 0 --bitserial 0 --threads "$threads" --json >>"$file.part"
  done
  mv "$file.part" "$file"
  file="$OUT/gemv-threads$threads.jsonl"
  : >"$file.part"
  for _ in $(seq "$RUNS"); do
    "$QNNLAB" bench gemm --sizes 256 --gemv 4096,16384 --bitserial 0 --threads "$threads" --json >>"$file.part"
  done
  mv "$file.part" "$file"
done
