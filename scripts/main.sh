#!/bin/bash
# The main job (npm start): train the embedded default model (a class-conditional U-Net on
# Fashion-MNIST, 1200 steps: about 9 minutes on 2 cores), draw guided samples with a fast
# stochastic sampler (the deterministic ones leave speckled samples on this model), and measure the model in the shipped feature space. Everything lands in a new
# run folder under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
diffuse() { node dist/src/cli/main.js "$@"; }
out=runs/main-$(date +%Y%m%d-%H%M%S)
diffuse train --out "$out"
diffuse sample "$out" --sampler dpmpp-2m-sde --grid karras --steps 20 --guidance 2 --out "$out/guided.png"
diffuse eval "$out" --n 1000
echo "main job done: $out (loss.png, samples-*.png, guided.png, eval/)"
