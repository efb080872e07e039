#!/usr/bin/env bash
# The twins figures of docs/results.md, from a clean directory: left/right twin episodes whose
# sideways speed follows where the box is, the tiny Kosmos-2, the tiny training config, then
# `mobile-vla eval` (fp32, bf16, fp16) on held-out twins and on the same held-out twins at half the
# light and with red and blue swapped (the familiarity monitor's test).
#   bash scripts/twins_figures.sh OUT_DIR      (about 4 minutes on 2 cores)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: twins_figures.sh OUT_DIR}"
mkdir -p "$out" && cd "$out"
export PATH="$repo/.venv/bin:$PATH"
synthetic() { python -m mobile_vla_ros.training.synthetic "$@" --frames 18 --legacy; }
synthetic twins --pairs 24 --seed 0
synthetic heldout --pairs 8 --seed 1
synthetic heldout-half-light --pairs 8 --seed 1 --shift half-light
synthetic heldout-swap-red-blue --pairs 8 --seed 1 --shift swap-red-blue
mobile-vla make-tiny-model --out tiny
mobile-vla train --config "$repo/config/train_tiny.yaml" --data twins --base-model tiny --out policy | tail -20
for data in heldout heldout-half-light heldout-swap-red-blue; do
  echo "== $data"
  mobile-vla eval --model policy --base-model tiny --threads 1 --data "$data" --json "$data.json" 2>/dev/null \
    | grep -vE "^\.\.\.|^vs blind|^mean linear"
done
