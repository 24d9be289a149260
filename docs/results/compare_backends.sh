#!/usr/bin/env bash
# GPT-Q vs quanto round-to-nearest with the same bit maps on SmolLM2-135M: all layers at 4 bits, and 4/2 bits at 3.0
# average bits (LIM order, 15 of 30 layers at 2 bits). Run from the repository root inside the GPT-Q environment
# (`python dev.py test-gptq` creates .venv-gptq; then `source .venv-gptq/bin/activate`). Prints one line per run and
# writes the checkpoints and eval JSONs under outputs/backends/.
set -euo pipefail
out=outputs/backends
mkdir -p "$out"
for target in 4 3; do
  for backend in quanto gptq; do
    start=$(date +%s)
    optimum-layerwise --quiet quantize smollm2-135m --backend "$backend" --bits 4,2 --target-bits "$target" \
      --num-samples 16 --output "$out/$backend-$target" --overwrite > "$out/$backend-$target.log"
    quantized=$(date +%s)
    optimum-layerwise --quiet eval "$out/$backend-$target" --windows 8 --json "$out/$backend-$target.json" > /dev/null
    python -c "import json,sys; r=json.load(open(sys.argv[1]))['perplexity']['kjv']; print(sys.argv[2], r['perplexity'])" \
      "$out/$backend-$target.json" "$backend target_bits=$target quantize $((quantized - start)) s, kjv perplexity"
  done
done
