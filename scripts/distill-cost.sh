#!/usr/bin/env bash
# The training cost of a distillation step against a plain training step of the same network
# (docs/BENCHMARKS.md, "Distillation"): PAIRS alternating pairs of a STEPS-step `diffuse train`
# of the shipped model's config and a STEPS-step progressive round (16 -> 8 teacher steps) and a
# guided stage-1 stage, all batch 64 and THREADS threads; each prints the images/s from the
# run's own trainSeconds (start-up and checkpoint writing excluded), and the medians at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-3} STEPS=${STEPS:-60} THREADS=${THREADS:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
d="node dist/src/cli/main.js"
rate() { node -e "const m=require('$1/checkpoint.json');console.log((m.step*m.config.batchSize/m.state.trainSeconds).toFixed(1))"; }
common=(--threads "$THREADS" --checkpoint-every 0)
med() { tr ' ' '\n' <<< "$1" | sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
tr_all="" pd_all="" gd_all=""
for i in $(seq "$PAIRS"); do
  $d train --steps "$STEPS" --sample-every 0 "${common[@]}" --out "$tmp/train-$i" > /dev/null 2>&1
  $d distill progressive --teacher-steps 16 --student-steps 8 --round-steps "$STEPS" "${common[@]}" --out "$tmp/pd-$i" > /dev/null 2>&1
  $d distill guided --teacher-steps 16 --student-steps 8 --round-steps 1 --guidance-steps "$STEPS" "${common[@]}" --out "$tmp/gd-$i" > /dev/null 2>&1
  t=$(rate "$tmp/train-$i") p=$(rate "$tmp/pd-$i/steps-8") g=$(rate "$tmp/gd-$i/w-conditioned")
  echo "pair $i: train $t images/s, progressive round $p images/s, guided stage 1 $g images/s"
  tr_all="$tr_all $t" pd_all="$pd_all $p" gd_all="$gd_all $g"
done
t=$(med "${tr_all# }") p=$(med "${pd_all# }") g=$(med "${gd_all# }")
echo "median: train $t, progressive round $p ($(node -p "($t/$p).toFixed(2)") x the cost of a training step), guided stage 1 $g ($(node -p "($t/$g).toFixed(2)") x)"
