#!/usr/bin/env bash
# The GPU figures still open, as one command for a lent device machine (NOT YET RUN on one: no session so far
# was lent a device; fix what breaks there first). Usage there, from the repo root:
#   OUT=$OUT bash bench/gpu.sh        (device tool: run(command="bash bench/gpu.sh", timeout_s=560))
# Writes one JSON line per figure to $OUT/gpu.jsonl; ~6-8 minutes on an H200 with its start.
# Uses the machine's own python3 (torch, torchvision, opencv, scikit-image, timm are in its image); packages it
# lacks (pytorch-metric-learning, faiss-cpu, filelock, ...) must travel as wheels (library device/README.md).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
py=${PYTHON:-python3}
log=$OUT/gpu.jsonl
run() {  # run NAME CMD...: append the command's last stdout line (its JSON), or its error, to the log
  local name=$1; shift
  local res
  res=$(timeout 240 "$@" 2>"$OUT/$name.err" | tail -1)
  echo "{\"figure\": \"$name\", \"result\": ${res:-null}}" >> "$log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1
run train_step          $py bench/train_step.py --device cuda
run train_step_compile  $py bench/train_step.py --device cuda --compile
run index_r50_bf16      $py bench/index.py throughput --model resnet50 --n 1024 --batch-size 64 --reps 2 --device cuda --amp
run heatmaps_r50_bf16   $py bench/heatmaps.py --model resnet50 --n 512 --batch-size 64 --reps 2 --device cuda --amp
run heatmaps_demo       $py bench/heatmaps.py --model demo --images synthetic --n 2048 --reps 2 --device cuda
cat "$log"
