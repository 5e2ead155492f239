#!/usr/bin/env bash
# A full latent consistency model (Luo et al. 2023; docs/distillation.md, "LCM"): every weight of the
# student trains, w in [1, 5] is embedded, then the yardstick at 1, 2 and 4 steps under cfg w = W
# against the teacher's DDPM reference and its solvers at the same NFE, plus sample grids.
#   Fashion-MNIST: OUT=runs/lcm-full scripts/lcm.sh
#   the latent emoji model (its samples decoded, measured in emoji-cnn-v1's space):
#     TEACHER=models/emoji-latent OUT=runs/lcm-latent W=2 STEPS=1500 scripts/lcm.sh
# Each step is skipped when its output exists, so a stopped run continues (rm -r OUT to start over).
# Environment: TEACHER (models/fashion-mnist), OUT (runs/lcm), STEPS (1000 optimizer steps), BATCH (32),
# W (3: the yardstick's guidance), N (500 samples per row), REF_STEPS (100: the teacher's DDPM
# reference), THREADS (2), YARDSTICK_OUT (OUT/yardstick; another run's folder reuses its cached rows).
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=${TEACHER:-models/fashion-mnist} OUT=${OUT:-runs/lcm} STEPS=${STEPS:-1000} BATCH=${BATCH:-32} W=${W:-3}
N=${N:-500} REF_STEPS=${REF_STEPS:-100} THREADS=${THREADS:-2} YARDSTICK_OUT=${YARDSTICK_OUT:-$OUT/yardstick}
d="node dist/src/cli/main.js"
t0=$SECONDS
step() { echo "== $1 ($((SECONDS - t0)) s)"; }

step "LCM of $TEACHER: $STEPS steps of batch $BATCH"
if [ ! -f "$OUT/distill.json" ]; then
  $d distill lcm --teacher "$TEACHER" --consistency-steps "$STEPS" --batch-size "$BATCH" --checkpoint-every 250 --threads "$THREADS" --out "$OUT"
else
  $d distill --resume "$OUT" # finishes a stopped run; a finished one returns at once
fi

step "samples: the student at 1, 2 and 4 steps, the teacher's DDIM at 4 (w = $W)"
for s in 1 2 4; do
  [ -f "$OUT/lcm-${s}steps.png" ] || $d sample "$OUT/lcm" --guidance "$W" --steps "$s" -n 36 --threads "$THREADS" --out "$OUT/lcm-${s}steps.png"
done
[ -f "$OUT/teacher-ddim-4steps.png" ] || $d sample "$TEACHER" --guidance "$W" --sampler ddim --steps 4 -n 36 --threads "$THREADS" --out "$OUT/teacher-ddim-4steps.png"

step "yardstick under cfg w = $W"
$d distill yardstick "$OUT/lcm" --teacher "$TEACHER" --guidance "$W" --student-steps 1,2,4 --n "$N" --reference-steps "$REF_STEPS" --threads "$THREADS" --out "$YARDSTICK_OUT"
step "done: $YARDSTICK_OUT/yardstick.json"
