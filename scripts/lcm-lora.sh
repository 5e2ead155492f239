#!/usr/bin/env bash
# LCM-LoRA's "universal acceleration module" claim (Luo et al. 2023, "LCM-LoRA", Sec. 3) on the
# shipped Fashion-MNIST model (docs/lora.md, "LCM-LoRA"):
#   1. fine-tune the base on a few categories (diffuse train --init BASE --data-classes CLASSES),
#   2. train LCM-LoRA on the BASE only (diffuse distill lcm --lora-rank RANK --guidance W),
#   3. merge the same adapter into the base and into the fine-tune (diffuse export --lora),
#   4. measure both with the yardstick at 1, 2 and 4 steps, each against its own teacher under
#      cfg w = W (base, fine-tune), next to the teachers' own solvers at the same NFE and a control:
#      the adapter at scale 0 (MODEL+lcm0: the model's own conditional denoiser under the same consistency
#      sampling), which shows what the LCM training added.
# Each step is skipped when its output exists, so a stopped run continues (rm -r OUT to start over).
# Environment: BASE (models/fashion-mnist; models/emoji-latent works too), OUT (runs/lcm-lora),
# CLASSES (5,7,9: Sandal, Sneaker, Ankle boot), FT_FLAGS (what the fine-tune changes; default
# --data-classes CLASSES; e.g. "--data emoji:google": one emoji style), FT_STEPS (300),
# LCM_STEPS (1000), RANK (8), W (3), BATCH (32), N (1000 samples per row), REF_STEPS (1000: the
# teachers' DDPM reference), THREADS (2), SOLVERS (the yardstick's default), YARDSTICK_BASE (OUT/yardstick-base;
# another run's folder reuses its cached rows of the base).
# Short check: OUT=runs/lcm-lora-short FT_STEPS=20 LCM_STEPS=40 N=100 REF_STEPS=100 THREADS=1 nice scripts/lcm-lora.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/lcm-lora} CLASSES=${CLASSES:-5,7,9} FT_STEPS=${FT_STEPS:-300} LCM_STEPS=${LCM_STEPS:-1000} RANK=${RANK:-8} W=${W:-3}
BATCH=${BATCH:-32} N=${N:-1000} REF_STEPS=${REF_STEPS:-1000} THREADS=${THREADS:-2} SOLVERS=${SOLVERS:-}
YARDSTICK_BASE=${YARDSTICK_BASE:-$OUT/yardstick-base} FT_FLAGS=${FT_FLAGS:---data-classes $CLASSES}
d="node dist/src/cli/main.js"
base=${BASE:-models/fashion-mnist}
adapter="$OUT/lcm/lcm/lora"
t0=$SECONDS
step() { echo "== $1 ($((SECONDS - t0)) s)"; }

step "fine-tune $base ($FT_FLAGS), $FT_STEPS steps"
[ -f "$OUT/finetuned/checkpoint.json" ] ||
  $d train --init "$base" $FT_FLAGS --steps "$FT_STEPS" --lr 2e-4 --warmup-steps 20 --sample-every 0 \
    --checkpoint-every 0 --threads "$THREADS" --out "$OUT/finetuned"

step "LCM-LoRA on $base: rank $RANK, w = $W, $LCM_STEPS steps of batch $BATCH"
[ -f "$adapter/adapter_model.safetensors" ] ||
  $d distill lcm --teacher "$base" --lora-rank "$RANK" --guidance "$W" --consistency-steps "$LCM_STEPS" --batch-size "$BATCH" \
    --checkpoint-every 250 --threads "$THREADS" --out "$OUT/lcm"
ls -l "$adapter"

step "the same adapter merged into the base and into the fine-tune"
[ -f "$OUT/base+lcm/checkpoint.json" ] || $d export "$base" "$OUT/base+lcm" --lora "$adapter"
[ -f "$OUT/finetuned+lcm/checkpoint.json" ] || $d export "$OUT/finetuned" "$OUT/finetuned+lcm" --lora "$adapter"
[ -f "$OUT/base+lcm0/checkpoint.json" ] || $d export "$base" "$OUT/base+lcm0" --lora "$adapter" --lora-scale 0
[ -f "$OUT/finetuned+lcm0/checkpoint.json" ] || $d export "$OUT/finetuned" "$OUT/finetuned+lcm0" --lora "$adapter" --lora-scale 0
$d sample "$OUT/finetuned" --lora "$adapter" --steps 4 -n 40 --threads "$THREADS" --out "$OUT/finetuned+lcm-4steps.png"
$d sample "$OUT/finetuned" --guidance "$W" --sampler ddim --steps 4 -n 40 --threads "$THREADS" --out "$OUT/finetuned-ddim-4steps.png"

ys=(--guidance "$W" --student-steps 1,2,4 --n "$N" --reference-steps "$REF_STEPS" --threads "$THREADS")
[ -z "$SOLVERS" ] || ys+=(--solvers "$SOLVERS")
step "yardstick: base + adapter against the base"
$d distill yardstick "$OUT/base+lcm" "$OUT/base+lcm0" --teacher "$base" "${ys[@]}" --out "$YARDSTICK_BASE"
step "yardstick: fine-tune + the base's adapter against the fine-tune"
$d distill yardstick "$OUT/finetuned+lcm" "$OUT/finetuned+lcm0" --teacher "$OUT/finetuned" "${ys[@]}" --out "$OUT/yardstick-finetuned"
step "done: $YARDSTICK_BASE/yardstick.json, $OUT/yardstick-finetuned/yardstick.json"
