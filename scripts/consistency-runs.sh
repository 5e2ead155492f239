#!/usr/bin/env bash
# The measured consistency-model runs of docs/BENCHMARKS.md ("Consistency models"): CD, CT and
# iCT students of the shipped Fashion-MNIST model, each 1500 steps of batch 32 on one thread,
# then the yardstick at 1, 2 and 4 steps against the 1000-step DDPM reference (n = 500, the same
# seeds, labels and reference rows as the progressive students' table).
# Usage: STEPS=1500 N=500 scripts/consistency-runs.sh   (about 1 hour on 2 shared cores)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-1500}
N=${N:-500}
OUT=${OUT:-runs/cm}
diffuse() { node dist/src/cli/main.js "$@"; }
mkdir -p "$OUT"
for m in cd ict ct; do
  [ -f "$OUT/$m/done" ] && continue # finished earlier
  start=$(date +%s)
  if [ -f "$OUT/$m/distill.json" ]; then diffuse distill --resume "$OUT/$m"
  else diffuse distill "$m" --out "$OUT/$m" --consistency-steps "$STEPS" --batch-size 32 --checkpoint-every 500 --threads 1; fi # a stopped run resumes
  echo "$m: $(( $(date +%s) - start )) s wall" | tee -a "$OUT/wall.txt" && touch "$OUT/$m/done"
done
# The yardstick caches rows under --out: copy the progressive table's cache to reuse its reference.
[ -d runs/yardstick-pd/rows ] && [ ! -d "$OUT/yardstick/rows" ] && mkdir -p "$OUT/yardstick" && cp -r runs/yardstick-pd/rows "$OUT/yardstick/"
diffuse distill yardstick "$OUT/cd/cd" "$OUT/ict/ict" "$OUT/ct/ct" --student-steps 1,2,4 --n "$N" --threads 1 --out "$OUT/yardstick"
