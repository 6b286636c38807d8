#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for scripts/gpu_side_by_side.sh, on a machine with Deno and apt:
# the device machines reach no network, so everything travels with the working tree (`carry`).
#   .gpu/deno.xz   this Deno binary, compressed (about 30 MB)
#   .gpu/bench.js  bench/bench.ts bundled into one file, npm packages included (about 3 MB);
#                  it sits one folder below the root, like bench/, so its kernels/ and data_file/
#                  URLs resolve as they do from bench/
#   .gpu/debs/     the Vulkan and EGL loaders (amd64), unpacked there when the machine lacks them
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu
mkdir -p .gpu/debs
xz -T0 -6 -c "$(readlink -f "$(command -v deno)")" > .gpu/deno.xz
deno bundle --quiet --platform=deno bench/bench.ts -o .gpu/bench.js
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
mkdir -p /tmp/amd64/partial
# shellcheck disable=SC2086
apt-get $o update -qq
# shellcheck disable=SC2086
(cd .gpu/debs && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
  libgles2)
du -sh .gpu
