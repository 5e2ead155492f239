#!/bin/bash
# The Matryoshka experiment of docs/BENCHMARKS.md ("Emoji Matryoshka: one nested network for 16,
# 32 and 64 px", issue 14): a class-conditional nested U-Net (Gu et al. 2023) trained jointly on
# 16, 32 and 64 px, its core the cascade's 16 px base (32 channels x [1, 2, 2]) and its outer
# levels 32 channels wide, at the same compute as the direct 64 px model (models/emoji-64: 2000
# steps x 32 images x 0.745 GFLOP; the nested network is 1.067 GFLOP per sample, so 1396 steps).
# Then: its FD at 64 px next to the direct model's (the same sampler, n and evaluator, in one run),
# sample grids at 16, 32 and 64 px, and the 64 px loss term against the direct model's loss over
# training compute (bench/level-losses.ts). Wall times go to ROOT/times.txt.
# Usage: scripts/matryoshka.sh [RUN ...]   (runs: joint eval curves grids; default all)
# Env: ROOT (runs/matryoshka), STEPS (1396), GROW (0: joint; > 0: progressive, nestedGrow),
#      N (1000), DIRECT (models/emoji-64), THREADS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
diffuse() { node dist/src/cli/main.js "$@" ${THREADS:+--threads "$THREADS"}; }
root=${ROOT:-runs/matryoshka}
steps=${STEPS:-1396}
grow=${GROW:-0}
n=${N:-1000}
direct=${DIRECT:-models/emoji-64}
run=$root/joint
[ "$grow" -gt 0 ] && run=$root/grow$grow
mkdir -p "$root"
flags=(--data emoji --channels rgb --class-conditional true --objective v --beta-schedule cosine --batch-size 32
  --image-size 64 --nested 16,32,64 --nested-grow "$grow" --model-channels 32 --channel-mult 1,2,2 --attention-resolutions 8
  --sample-every 500 --sample-steps 25 --checkpoint-every 250 --steps "$steps")
sampling=(--sampler dpmpp-2m-sde --grid karras --steps 20)

for step in ${@:-joint eval curves grids}; do
  case $step in
    joint)
      t0=$(date +%s)
      if [ -f "$run/checkpoint.json" ]; then diffuse train --resume "$run" --steps "$steps"; else diffuse train "${flags[@]}" --out "$run"; fi
      echo "$(basename "$run") train_wall_s $(($(date +%s) - t0))" >>"$root/times.txt"
      ;;
    eval)
      diffuse eval "$run" --n "$n" "${sampling[@]}" --out "$root/eval-$(basename "$run")"
      diffuse eval "$direct" --n "$n" "${sampling[@]}" --out "$root/eval-direct"
      ;;
    curves) node dist/bench/level-losses.js --resolution 64 --out "$root/loss-64.png" "$direct" "$run" ;;
    grids) for r in 16 32 64; do diffuse sample "$run" --resolution "$r" --n 18 --ncol 9 --scale $((128 / r)) "${sampling[@]}" --out "$root/grid-$(basename "$run")-$r.png"; done ;;
    *) echo "unknown step $step (joint eval curves grids)" >&2 && exit 2 ;;
  esac
done
