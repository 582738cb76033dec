#!/usr/bin/env bash
# The test command: installs missing system packages, then the gate (formatting, lints with
# warnings denied, documentation with warnings denied) and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked
cargo test --workspace --locked "$@"
