#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device and torch already installed
# (no venv: the Makefile's pins a CPU build of torch). Runs the tests marked `gpu`, then the
# ODE and CDE benchmarks on the device, which write their "## GPU" subsections of
# docs/benchmarks.md. The CDE benchmark needs torchcde (pip install "ctrnn[backends]"); it is
# skipped with a message when torchcde is missing. Wheels in .whl/ (benchmarks/device_wheels.sh
# fetches torchcde, torchsde and trampoline there) are installed first, into a folder of
# their own. Logs go to $LOG_DIR (default: a temporary folder), whose path is printed at the
# end.
#
#   benchmarks/gpu_check.sh [--quick]     # --quick: small benchmark sizes (a smoke run)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    site="$(mktemp -d)"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"
fi
LOG_DIR="${LOG_DIR:-$(mktemp -d)}"
mkdir -p "$LOG_DIR"
quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
status=0

python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: needs python3 with torch and a CUDA device; torch.cuda.is_available() failed" >&2
    exit 2
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG_DIR/gpu.txt"

python3 -m pytest -m gpu -p no:cacheprovider -q tests 2>&1 | tee "$LOG_DIR/gpu_tests.log" || status=1
python3 benchmarks/ode.py --device cuda "${quick[@]}" --out docs/benchmarks.md \
    2>&1 | tee "$LOG_DIR/ode.log" || status=1
if python3 -c "import torchcde" 2>/dev/null; then
    python3 benchmarks/cde.py --device cuda "${quick[@]}" --out docs/benchmarks.md \
        2>&1 | tee "$LOG_DIR/cde.log" || status=1
else
    echo "gpu_check: torchcde is not installed; the CDE benchmark is skipped" | tee "$LOG_DIR/cde.log"
fi
cp docs/benchmarks.md "$LOG_DIR/benchmarks.md"
echo "gpu_check: logs and docs/benchmarks.md in $LOG_DIR (exit $status)"
exit $status
