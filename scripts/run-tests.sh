#!/usr/bin/env bash
# Runs every test of the workspace and ends with one total line, so the last line
# says how many tests ran (cargo's own last line is often an empty doc-test run).
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "all tests: $passed passed, $failed failed"
exit "$status"
