#!/usr/bin/env bash
# Writes a full-page PNG of a report as headless Chromium renders it, after checking the page
# (no missing image, broken link or JavaScript error).
#   scripts/screenshot-report.sh [REPORT_DIR] [OUT.png]     (defaults: reports/, report.png)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-reports}"
png="${2:-report.png}"
cargo run --quiet --release --locked -p gridbed-experiments --bin experiment -- \
  check-report "$dir" --screenshot "$png"
