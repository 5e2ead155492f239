#!/bin/bash
# The cascade experiment of docs/BENCHMARKS.md ("Emoji cascade: a 16 px base and a 16 -> 64
# super-resolution stage", issue 14): a class-conditional 16 px base, and two 16 -> 64 SR stages
# on the same network as the direct 64 px model (models/emoji-64: 16 channels x [1, 2, 4, 4],
# v prediction, cosine schedule shifted from 16 px), one trained with noise-conditioning
# augmentation (s ~ U[0, AUG_MAX]) and one without. Then: the base alone, each cascade's FD against
# the augmentation level s at sampling (Ho et al. 2021, Fig. 5 / Table 4), and low-res -> high-res
# panels. Training wall times go to ROOT/times.txt; `diffuse info RUN` prints each network's
# forward GFLOP per image (unetFlops) and its training compute. Matched compute: the direct model
# took 2000 steps x 32 images x 0.745 GFLOP; base16 is 0.132 GFLOP per image and the SR stage
# 0.748, so BASE_STEPS=2000 + SR_STEPS=1640 spend the same (+0.1%) per cascade.
# Usage: scripts/cascade.sh [RUN ...]   (runs: base16 sr64-aug sr64-noaug eval panels; default all)
# Env: ROOT (runs/cascade), BASE_STEPS (2000), SR_STEPS (1640), AUG_MAX (0.5), N (1000),
#      LEVELS (the swept s: 0,0.05,0.1,0.2,0.3,0.5), THREADS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
diffuse() { node dist/src/cli/main.js "$@" ${THREADS:+--threads "$THREADS"}; }
root=${ROOT:-runs/cascade}
base_steps=${BASE_STEPS:-2000}
sr_steps=${SR_STEPS:-1640}
aug_max=${AUG_MAX:-0.5}
n=${N:-1000}
levels=${LEVELS:-0,0.05,0.1,0.2,0.3,0.5}
mkdir -p "$root"
common=(--data emoji --channels rgb --class-conditional true --objective v --beta-schedule cosine
  --batch-size 32 --attention-resolutions 8 --sample-every 500 --sample-steps 25 --checkpoint-every 250)
base=(--image-size 16 --model-channels 32 --channel-mult 1,2,2 --steps "$base_steps")
sr=(--image-size 64 --model-channels 16 --channel-mult 1,2,4,4 --shift-base 16 --low-res 16 --steps "$sr_steps")
sampling=(--sampler dpmpp-2m-sde --grid karras --steps 20)

train() { # RUN STEPS FLAGS...: train (or resume) ROOT/RUN, logging the wall time
  local out=$root/$1 steps=$2
  shift 2
  local t0
  t0=$(date +%s)
  if [ -f "$out/checkpoint.json" ]; then diffuse train --resume "$out" --steps "$steps"; else diffuse train "${common[@]}" "$@" --out "$out"; fi
  echo "$(basename "$out") train_wall_s $(($(date +%s) - t0))" >>"$root/times.txt"
}

for run in ${@:-base16 sr64-aug sr64-noaug eval panels}; do
  case $run in
    base16) train base16 "$base_steps" "${base[@]}" ;;
    sr64-aug) train sr64-aug "$sr_steps" "${sr[@]}" --aug-max "$aug_max" ;;
    sr64-noaug) train sr64-noaug "$sr_steps" "${sr[@]}" --aug-max 0 ;;
    eval)
      diffuse eval "$root/base16" --n "$n" "${sampling[@]}" # the base alone, upsampled to 64 px
      for s in sr64-aug sr64-noaug; do
        diffuse eval --cascade "$root/base16,$root/$s" --aug-level "$levels" --n "$n" "${sampling[@]}" --out "$root/eval-$s"
      done
      ;;
    panels)
      for s in sr64-aug sr64-noaug; do
        for level in 0 0.2; do
          diffuse sample --cascade "$root/base16,$root/$s" --aug-level "$level" --n 18 --ncol 9 --scale 2 "${sampling[@]}" --save-low-res --out "$root/panel-$s-s$level.png"
        done
      done
      ;;
    *) echo "unknown run $run (base16 sr64-aug sr64-noaug eval panels)" >&2 && exit 2 ;;
  esac
done
