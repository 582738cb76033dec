#!/usr/bin/env bash
# Runs every decoder's fuzz harness longer than `cargo test` does (proptest on stable; each harness
# also replays its committed seed corpus). Usage: scripts/fuzz.sh [CASES] [TARGET...]
#   CASES   cases per property (default 200000)
#   TARGET  any of: real phoenix gxp elf runfile platform (default: all)
# Runs in the test profile (the build `cargo test` already made), where integer overflow panics:
# overflow checks are what find unchecked counters. FUZZ_RELEASE=1 runs more inputs per second
# but without them.
# Prints the cases run per target and its wall time; a panic fails the run and proptest prints
# the minimal failing input (add it to the target's fuzz/corpus/ as a regression once fixed).
set -euo pipefail
cases="${1:-200000}"
shift || true
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(real phoenix gxp elf runfile platform)
for t in "${targets[@]}"; do
  case "$t" in
    real) args=(-p gridbed-real --test fuzz_frames) ;;
    phoenix) args=(-p gridbed-phoenix --test fuzz_wire) ;;
    gxp) args=(-p gridbed-gxp --test fuzz_proto) ;;
    elf) args=(-p gridbed-vmp --test fuzz_elf) ;;
    runfile) args=(-p gridbed-experiments --test fuzz_runfile) ;;
    platform) args=(-p gridbed-sim --test fuzz_platform) ;;
    *) echo "unknown target '$t' (real phoenix gxp elf runfile platform)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  PROPTEST_CASES="$cases" cargo test ${FUZZ_RELEASE:+--release} "${args[@]}" -- --test-threads 1
  echo "fuzz: $t: $cases cases per property, $(( $(date +%s) - start )) s"
done
