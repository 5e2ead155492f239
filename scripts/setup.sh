#!/usr/bin/env bash
# Sets up a fresh Debian bookworm machine for Diffuse, idempotently:
#   - Debian packages: libtorch-dev (the engine), libgloo-dev (the headers of Gloo, c10d's
#     CPU transport: data-parallel training), OpenBLAS built with OpenMP (so BLAS
#     and libtorch share one thread pool instead of fighting for the cores), build
#     tools, python3-torch (reference values in tests, the peer in benchmarks),
#     dataset-fashion-mnist (the reference dataset), and chromium + fonts-dejavu-core (the
#     lab's browser test, driven by npm's playwright-core: no browser is downloaded);
#   - npm packages; the native addon (node-gyp, against the Node headers on the
#     machine: nothing is downloaded) and the TypeScript.
# LIBTORCH=/path/to/libtorch builds against another libtorch (e.g. a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libtorch-dev libgloo-dev libopenblas0-openmp build-essential python3 python3-torch python3-numpy dataset-fashion-mnist chromium fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The OpenMP OpenBLAS must be the BLAS libtorch loads (a pthreads one oversubscribes).
blas=/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
if [ -e "$blas" ] && [ "$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null)" != "$blas" ]; then
  ${SUDO:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" || true
fi

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
npm run build
echo "setup: done ($(node -p "require('./dist/src').torchVersion()") libtorch, $(node -p "require('./dist/src').getNumThreads()") threads)"
