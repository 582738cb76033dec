#!/usr/bin/env bash
# Runs the real transport's decoder fuzzing (frame reader, handshake) longer than `cargo test` does.
# Usage: scripts/fuzz-real.sh [CASES]   (default 200000 cases per property)
set -euo pipefail
cases="${1:-200000}"
cd "$(dirname "$0")/.."
PROPTEST_CASES="$cases" cargo test -p gridbed-real --release --test fuzz_frames -- --nocapture
