#!/usr/bin/env bash
# Runs every experiment (simulated, then real mode where there is one) and rewrites reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The ray tracer's real mode starts one `phoenix-raytracer` process per machine.
cargo build --release --locked -p gridbed-phoenix-driver --bins
# A seed sweep kept in the report (reports/sweeps/): phoenix-scale at full size over 40 seeds.
rm -rf reports/sweeps/phoenix-scale
cargo run --release --locked -p gridbed-experiments --bin experiment -- sweep phoenix-scale --seeds 1..40 --out reports/sweeps/phoenix-scale
cargo run --release --locked -p gridbed-experiments --bin experiment -- run all --mode both "$@"
# The report as a reader sees it: every image loads, no broken link, no JavaScript error.
cargo run --release --locked -p gridbed-experiments --bin experiment -- check-report
