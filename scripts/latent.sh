#!/usr/bin/env bash
# The latent diffusion run of docs/BENCHMARKS.md ("Latent diffusion against pixels and the cascade",
# issue 15): the KL-f4 autoencoder (diffuse train-autoencoder, as in "The emoji autoencoder") shipped
# as float16, a class-conditional U-Net on its [4, 16, 16] latents trained for the same wall time as
# the direct 64 px model (models/emoji-64: 2000 steps), then measured the same way as the pixel models
# (emoji-cnn-v1, dpmpp-2m-sde, Karras, 20 steps, no guidance, seed 0).
# Usage: scripts/latent.sh [STAGE ...]   (stages: ae export time train eval speed ship; default all)
# Env: ROOT (runs/latent), AE_RUN (runs/ae), AE (models/emoji-ae-f4), N (500), THREADS (1),
#      STEPS (from the time stage: 2000 x the direct model's s/step over the latent model's),
#      SPEED_N (64: images per sampling-speed run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${ROOT:-runs/latent} ae_run=${AE_RUN:-runs/ae} ae=${AE:-models/emoji-ae-f4} n=${N:-500} threads=${THREADS:-1} speed_n=${SPEED_N:-64}
d() { node dist/src/cli/main.js "$@"; }
mkdir -p "$root"
common=(--data emoji --channels rgb --class-conditional true --objective v --beta-schedule cosine --batch-size 32
  --attention-resolutions 8 --sample-every 500 --sample-steps 25 --checkpoint-every 250 --threads "$threads")
latent=(--latent "$ae" --image-size 64 --model-channels 32 --channel-mult 1,2,2)
direct=(--image-size 64 --model-channels 16 --channel-mult 1,2,4,4 --shift-base 16)
sampling=(--sampler dpmpp-2m-sde --grid karras --steps 20)
spstep() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['state']['trainSeconds']/m['step'])" "$1/checkpoint.json"; }

for stage in ${@:-ae export time train eval speed ship}; do
  case $stage in
    ae) [ -f "$ae_run/autoencoder.json" ] || d train-autoencoder --data emoji --out "$ae_run" --threads "$threads" ;;
    export) d export "$ae_run" "$ae" --dtype float16 && d eval-autoencoder "$ae" --threads "$threads" | tee "$root/ae-eval.txt" ;;
    time) # 40 steps of each network back to back, under the same conditions: the latent run's steps for equal time
      rm -rf "$root/time-direct" "$root/time-latent"
      d train "${common[@]}" "${direct[@]}" --steps 40 --sample-every 0 --out "$root/time-direct"
      d train "${common[@]}" "${latent[@]}" --steps 40 --sample-every 0 --out "$root/time-latent"
      a=$(spstep "$root/time-direct") b=$(spstep "$root/time-latent")
      echo "direct $a s/step, latent $b s/step: $(python3 -c "print(round(2000 * $a / $b))") latent steps match the direct model's 2000" | tee "$root/time.txt"
      ;;
    train)
      steps=${STEPS:-$(awk '{print $6}' "$root/time.txt")}
      t0=$SECONDS
      if [ -f "$root/model/checkpoint.json" ]; then d train --resume "$root/model" --steps "$steps" --threads "$threads"
      else d train "${common[@]}" "${latent[@]}" --steps "$steps" --out "$root/model"; fi
      echo "model train_wall_s $((SECONDS - t0)) (encoding included)" >>"$root/times.txt"
      ;;
    eval) d eval "$root/model" --n "$n" "${sampling[@]}" --threads "$threads" ;;
    speed) # sampling wall time of SPEED_N images, each method back to back (decoding and both cascade stages included)
      for m in latent direct cascade; do
        t0=$(date +%s.%N)
        case $m in
          latent) d sample "$root/model" -n "$speed_n" "${sampling[@]}" --threads "$threads" --out "$root/speed-latent.png" ;;
          direct) d sample models/emoji-64 -n "$speed_n" "${sampling[@]}" --threads "$threads" --out "$root/speed-direct.png" ;;
          cascade) d sample --cascade models/emoji-cascade-base16,models/emoji-cascade-sr64 --aug-level 0.5 -n "$speed_n" "${sampling[@]}" --threads "$threads" --out "$root/speed-cascade.png" ;;
        esac
        echo "$m $(python3 -c "import sys; print(f'{$speed_n / ($(date +%s.%N) - $t0):.2f}')") images/s" | tee -a "$root/speed.txt"
      done
      ;;
    ship) d export "$root/model" models/emoji-latent --dtype float16 && d info models/emoji-latent ;;
    *) echo "unknown stage $stage (ae export time train eval speed ship)" >&2 && exit 2 ;;
  esac
done
