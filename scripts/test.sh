#!/usr/bin/env bash
# The test command: installs quantgpt with its test dependencies (CPU torch, pinned) and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"   # pinned: an unpinned torch pulls a multi-GB CUDA build
python3 -m pip install -q -e ".[test,gguf,kernel]"  # triton: its interpreter runs the kernel tests on CPU
python3 -m pytest tests "$@"
