#!/usr/bin/env bash
# Runs the lithium bcc/fcc examples at 300 K and 100 K: the self-consistent Gaussian, then the
# NCT flow trained on it (one run directory each: results.json holds both).
# Usage (from the repository root): bash examples/lithium/run_all.sh RUNS_DIR [extra --set overrides]
# A run whose directory already holds results.json is skipped (delete it to rerun); an
# interrupted one is resumed from its last checkpoint. Off a terminal each run logs a progress line
# about every 40 steps (step, F, s/step, time left).
set -euo pipefail
runs=${1:-runs}; shift || true
run() {
  local out=$1; shift
  if [[ -f "$out/results.json" ]]; then echo "skip $out (results.json exists)"; return; fi
  if [[ -f "$out/checkpoints/state.npz" ]]; then
    thermoflow run "$@" --out "$out" --resume
  else
    thermoflow run "$@" --out "$out"
  fi
}
for T in 300 100; do
  for s in bcc fcc; do
    run "$runs/li-${s}-${T}K" "examples/lithium/${s}_${T}K.toml" "$@"
  done
done
