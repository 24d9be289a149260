#!/usr/bin/env bash
# Reproduces every sweep in docs/results.md (run from the repository root inside the dev environment:
# `python dev.py test` creates .venv; then `source .venv/bin/activate`). Each sweep writes its folder under
# docs/results/ and its wall time to docs/results/times.txt. Ordered by priority: on a 2-core CPU the whole list
# takes hours.
set -euo pipefail
out=docs/results
run() {
  local name=$1; shift
  local start=$(date +%s)
  optimum-layerwise --quiet sweep "$@" --output "$out/$name"
  echo "$name $(( $(date +%s) - start )) s" >> "$out/times.txt"
}
run smollm2-8to4-g128  smollm2-135m       --bits 8,4 --step 3
run gemma3-8to4-g128   gemma3-270m        --bits 8,4 --step 3 --pruning ""
run smollm2-4to2-g128  smollm2-135m       --bits 4,2 --step 6 --pruning ""
run smollm2-4to2-g32   smollm2-135m       --bits 4,2 --step 6 --pruning "" --group-size 32
run qwen25-8to4-g128   qwen2.5-coder-0.5b --bits 8,4 --step 6 --pruning ""
run gemma3-4to2-g128   gemma3-270m        --bits 4,2 --step 6 --pruning ""
run qwen25-4to2-g128   qwen2.5-coder-0.5b --bits 4,2 --step 6 --pruning ""
run gemma3-4to2-g32    gemma3-270m        --bits 4,2 --step 6 --pruning "" --group-size 32
run qwen25-4to2-g32    qwen2.5-coder-0.5b --bits 4,2 --step 6 --pruning "" --group-size 32
run smollm2-8to4-g128-tasks smollm2-135m --bits 8,4 --step 15 --orderings lim,reverse_lim,sensitivity,random --pruning "" --tasks piqa,arc_easy,winogrande --limit 200
