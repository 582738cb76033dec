#!/usr/bin/env bash
# Runs every experiment (simulated, then real mode where there is one) and rewrites reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --locked -p gridbed-experiments --bin experiment -- run all --mode both "$@"
