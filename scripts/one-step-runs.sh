#!/usr/bin/env bash
# The measured one-step runs of docs/BENCHMARKS.md ("One step: ADD, DMD and DMD2", issue 18):
# students of the shipped Fashion-MNIST model (models/fashion-mnist), then the yardstick at 1 step
# (and 2 and 4 for ADD, whose 4-point grid holds the 1- and 2-step grids) with the same seeds,
# labels and n as the progressive and consistency tables.
#   add   ADD_STEPS (600) steps of batch BATCH, the paper's lambda = 2.5 and our R1 gamma
#   pairs PAIRS (2048) regression pairs of the teacher's DPM-Solver++(2M), 25 steps
#   dmd   DMD_STEPS (600) generator steps, one fake-score update each, L2 regression 0.25
#   dmd2  DMD2_STEPS (300) generator steps, 5 fake-score updates each
# Each run resumes when stopped (rm -r OUT/NAME to start it over); finished ones are skipped.
# Env: OUT (runs/one-step), BATCH (32), LR (1e-4: dmd and dmd2; add keeps its 3e-4 decaying default),
# N (500), REF_STEPS (100: the reference's DDPM steps; the 1000-step one is 18 min more), THREADS (1),
# ONLY (a space-separated subset of: add pairs dmd dmd2 yardstick).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/one-step} BATCH=${BATCH:-32} LR=${LR:-1e-4} N=${N:-500} REF_STEPS=${REF_STEPS:-100} THREADS=${THREADS:-1}
ADD_STEPS=${ADD_STEPS:-600} PAIRS=${PAIRS:-2048} DMD_STEPS=${DMD_STEPS:-600} DMD2_STEPS=${DMD2_STEPS:-300}
ONLY=${ONLY:-add pairs dmd dmd2 yardstick}
d() { node dist/src/cli/main.js "$@"; }
want() { [[ " $ONLY " == *" $1 "* ]]; }
mkdir -p "$OUT"
timed() { # NAME COMMAND...: runs once, appends its wall time to OUT/wall.txt
  local name=$1 start=$SECONDS
  shift
  [ -f "$OUT/$name.done" ] && return 0
  "$@"
  echo "$name: $((SECONDS - start)) s wall" | tee -a "$OUT/wall.txt" && touch "$OUT/$name.done"
}
run() { # NAME METHOD ARGS...: a distill run that resumes when stopped
  local name=$1 method=$2
  shift 2
  if [ -f "$OUT/$name/distill.json" ]; then d distill --resume "$OUT/$name" --threads "$THREADS"
  else d distill "$method" --out "$OUT/$name" --batch-size "$BATCH" --threads "$THREADS" --checkpoint-every 100 "$@"; fi
}
want add && timed add run add add --adversarial-steps "$ADD_STEPS" --student-steps 4
want pairs && timed pairs d distill dmd-pairs --n "$PAIRS" --out "$OUT/pairs" --threads "$THREADS"
want dmd && timed dmd run dmd dmd --dmd-steps "$DMD_STEPS" --pairs "$OUT/pairs" --lr "$LR"
want dmd2 && timed dmd2 run dmd2 dmd2 --dmd-steps "$DMD2_STEPS" --lr "$LR"
want yardstick && d distill yardstick "$OUT/add/add" --student-steps 1,2,4 --n "$N" --reference-steps "$REF_STEPS" --threads "$THREADS" --out "$OUT/yardstick" &&
  d distill yardstick "$OUT/dmd/dmd" "$OUT/dmd2/dmd2" --student-steps 1 --n "$N" --reference-steps "$REF_STEPS" --threads "$THREADS" --out "$OUT/yardstick"
