#!/usr/bin/env bash
# Data parallel on one machine: 1 rank x 2 threads (batch 64) against 2 ranks x 1 thread
# (batch 32 each), the default Fashion-MNIST U-Net, 200 steps, PAIRS pairs in turn.
# Prints each run's state.trainSeconds and the all-reduce share rank 0 reports.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-2}
OUT=${OUT:-/tmp/c10d-bench}
mkdir -p "$OUT"
seconds() { node -e "const c=require('$1/checkpoint.json');console.log(c.state.trainSeconds.toFixed(1))"; }
for r in $(seq "$PAIRS"); do
  rm -rf "$OUT/b1" "$OUT/b2"
  npm run -s diffuse -- train --steps 200 --threads 2 --sample-every 0 --checkpoint-every 0 --out "$OUT/b1" > "$OUT/b1-$r.log" 2>&1
  echo "pair $r: 1 rank x 2 threads: $(seconds "$OUT/b1") s"
  npm run -s diffuse -- train --nproc-per-node 2 --threads 1 --batch-size 32 --steps 200 --sample-every 0 --checkpoint-every 0 --out "$OUT/b2" > "$OUT/b2-$r.log" 2>&1
  echo "pair $r: 2 ranks x 1 thread: $(seconds "$OUT/b2") s; $(tail -1 "$OUT/b2-$r.log")"
done
