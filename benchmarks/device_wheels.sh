#!/usr/bin/env bash
# Run here, before a GPU check: downloads the pure-Python packages that the CUDA machine's
# image lacks (torchcde, torchsde and trampoline; torch, torchdiffeq, jax and diffrax are
# there) as wheels into .whl/ (ignored by git). Name .whl in the device run's `carry`;
# benchmarks/gpu_check.sh installs them when it finds the folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
    torchcde==0.2.5 torchsde==0.2.6 trampoline==0.1.2
ls .whl
