#!/usr/bin/env bash
# Whole-run speed, side by side, in one run: one `sovra simulate -p fgd --seeds 42 --threads 1` process (built-in
# CSVs parsed, one fill run, no ceiling) against the numpy reference (scripts/fgd_reference.py, written from
# docs/fgd-simulator-protocol.md) doing the same run — both with the SplitMix stream, so both place the same tasks in
# the same order and must print the same allocation. CPU time (user + sys) of each process, best of N.
#
#   python3 -m venv /tmp/simvenv && /tmp/simvenv/bin/pip install numpy
#   cargo build --release -p sovra --bin sovra
#   PYTHON=/tmp/simvenv/bin/python scripts/compare_speed.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
N=${1:-3}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/sovra}
cpu() { # prints user+sys seconds of the command
  /usr/bin/time -f '%U %S' -o /tmp/compare_speed.time "$@" > /tmp/compare_speed.out 2>&1
  awk '{printf "%.3f\n", $1 + $2}' /tmp/compare_speed.time
}
best() { sort -n | head -1; }
rust=$(for _ in $(seq "$N"); do cpu "$BIN" simulate -p fgd --seeds 42 --threads 1 --rng splitmix; done | best)
rust_alloc=$(grep -E '^fgd' /tmp/compare_speed.out | awk '{print $2}')
py=$(for _ in $(seq "$N"); do cpu "$PYTHON" scripts/fgd_reference.py --trace data/alibaba-gpu-v2023/openb_pod_list_default.csv -p fgd --seeds 42; done | best)
py_alloc=$(grep -E '^fgd seed' /tmp/compare_speed.out | awk '{print $5}')
echo "sovra simulate: ${rust} s CPU (alloc@100 ${rust_alloc})"
echo "numpy reference: ${py} s CPU (alloc@100 ${py_alloc})"
awk -v r="$rust" -v p="$py" 'BEGIN { printf "ratio: sovra uses 1/%.0f of the reference'"'"'s CPU time\n", p / r }'
