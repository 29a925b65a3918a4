#!/usr/bin/env bash
# Runs the lithium bcc/fcc examples at 300 K and 100 K, with the flow trained and frozen.
# Usage (from the repository root): bash examples/lithium/run_all.sh [extra --set overrides]
# A run whose directory already holds results.json is skipped (delete it to rerun).
# Frozen flow: only the occupation probabilities are optimised (converged in 400 steps).
set -euo pipefail
run() {
  local out=$1; shift
  if [[ -f "$out/results.json" ]]; then echo "skip $out (results.json exists)"; return; fi
  thermoflow run "$@" --out "$out" --no-progress
}
for T in 300 100; do
  for s in bcc fcc; do
    cfg="examples/lithium/${s}_${T}K.toml"
    run "runs/li-${s}-${T}K-frozen" "$cfg" --set nct.freeze_flow=true --set nct.steps=400 "$@"
    run "runs/li-${s}-${T}K" "$cfg" "$@"
  done
done
