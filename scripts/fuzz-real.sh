#!/usr/bin/env bash
# Runs the real transport's decoder fuzzing (frame reader, handshake) longer than `cargo test` does.
# Usage: scripts/fuzz-real.sh [CASES]   (default 200000 cases per property; scripts/fuzz.sh runs
# every decoder's harness)
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/fuzz.sh "${1:-200000}" real
