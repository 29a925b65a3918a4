#!/usr/bin/env bash
# Runs the lithium bcc/fcc examples at 100 K and 300 K, with the flow trained and frozen.
# Usage (from the repository root): bash examples/lithium/run_all.sh [extra --set overrides]
set -euo pipefail
for T in 300 100; do
  for s in bcc fcc; do
    thermoflow run "examples/lithium/${s}_${T}K.toml" --out "runs/li-${s}-${T}K" --no-progress "$@"
    thermoflow run "examples/lithium/${s}_${T}K.toml" --out "runs/li-${s}-${T}K-frozen" --no-progress \
      --set nct.freeze_flow=true --set nct.steps=400 "$@"
  done
done
