#!/usr/bin/env bash
# The reliability checks of the README's "Guarantees", harder than the test suite runs them:
# the hostile invocations against the release binary, the SIGKILL tests under a fresh random
# schedule (or the one given), the full-disk test, and the property tests with many cases.
#
#   bash scripts/faults.sh           # a random kill schedule, 2000 property cases
#   bash scripts/faults.sh 12345     # replay the kill schedule with seed 12345
#
# Environment:
#   PROPTEST_CASES   cases per property test (default 2000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seed="${1:-$RANDOM$RANDOM}"
cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
bash scripts/setup.sh
cargo build --release -p span-marker-cli

echo "== hostile invocations, release binary"
SPAN_MARKER_BIN="$CARGO_TARGET_DIR/release/span-marker" \
  cargo test -p span-marker-cli --test hostile -- --nocapture
echo "== SIGKILL and full-disk tests, kill schedule seed $seed"
SPAN_MARKER_FAULT_SEED="$seed" cargo test -p span-marker-cli --test annotate --test resume
echo "== property tests, ${PROPTEST_CASES:-2000} cases each"
PROPTEST_CASES="${PROPTEST_CASES:-2000}" cargo test --release -p span-marker --test fuzz
echo "all fault checks passed (kill schedule seed $seed)"
