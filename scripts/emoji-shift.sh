#!/bin/bash
# The resolution-shift experiment of docs/BENCHMARKS.md ("Emoji: does the schedule shift
# help at 64 px?"): class-conditional U-Nets on emoji at 32 and 64 px, each trained with the
# standard cosine schedule and with simple diffusion's shifted one (--shift-base 16), on the
# same number of training images (STEPS x 32), then measured in emoji-cnn-v1's space.
# The 64 px network is the 32 px one with one more level on top (16 channels at 64 px).
# Usage: scripts/emoji-shift.sh [RUN ...]   (runs: 64-std 64-shift16 32-std 32-shift16 64-shift32)
set -euo pipefail
cd "$(dirname "$0")/.."
diffuse() { node dist/src/cli/main.js "$@"; }
root=${ROOT:-runs/emoji-shift}
steps=${STEPS:-1500}
mkdir -p "$root"
common=(--data emoji --channels rgb --class-conditional true --objective v --beta-schedule cosine
  --batch-size 32 --steps "$steps" --attention-resolutions 8 --sample-every 750 --sample-steps 25 --checkpoint-every 250)
for run in "${@:-64-std 64-shift16 32-std 32-shift16}"; do
  for r in $run; do
    size=${r%%-*}
    case $size in
      64) net=(--image-size 64 --model-channels 16 --channel-mult 1,2,4,4) ;;
      32) net=(--image-size 32 --model-channels 32 --channel-mult 1,2,2) ;;
    esac
    case ${r#*-} in
      std) shift=() ;;
      shift16) shift=(--shift-base 16) ;;
      shift32) shift=(--shift-base 32) ;;
    esac
    out=$root/$r
    t0=$(date +%s)
    if [ -f "$out/checkpoint.json" ]; then diffuse train --resume "$out" --steps "$steps"; else diffuse train "${common[@]}" "${net[@]}" "${shift[@]}" --out "$out"; fi
    t1=$(date +%s)
    echo "$r train_wall_s $((t1 - t0))" >>"$root/times.txt"
    diffuse eval "$out" --n 1000 --sampler dpmpp-2m-sde --grid karras --steps 20
    t2=$(date +%s)
    echo "$r eval_wall_s $((t2 - t1))" >>"$root/times.txt"
  done
done
