#!/bin/bash
# Session 7's runs for issue 5 (section 11 of docs/BENCHMARKS.md), one device call per part, after
# device-stage's first call; the calls must follow each other within the machine's 30 s warm time.
#   PART=1: laq@2-2-8 (300 steps) with TORCH_LOGS=recompiles beside RTN / GPTQ 2-2-8 in 32-column groups,
#           for 200 s (laq's steps were 4x slower than the other methods' on the shared GPU in section 10);
#           then six shared processes: the 4-4-8 baselines kd, pact, lsq, laq at quantgpt's budget (700 steps,
#           16-feature embedding groups, the new default) beside quantgpt's second seed; the block-wise start
#           at 2-2-8 (300 steps, against 69.43 from the float weights), then 2-2-8 with 16-feature embedding groups,
#           then laq@2-2-8 if the first phase cut it
#   PART=2: the same command again: the runs LIMIT cut continue (--skip-done --resume)
#   PART=3: the block-wise start at 2-2-8 for 1300 steps alone, against 50.86 from the float weights
# Usage: source .devcache/p2/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
shared() {
  export QG_SHARED_GPU=6
  bg q228 --steps 300 --only quantgpt-init-blockwise@2-2-8 quantgpt-embedding-g16@2-2-8 laq@2-2-8  # laq: if PART=1 cut it
  bg q448 --steps 700 --only quantgpt@4-4-8 --tag=-e16-s700-seed1 --set seed=1
  for m in kd pact lsq laq; do bg ${m}448 --steps 700 --only $m@4-4-8 --tag=-e16-s700; done
  bg ptq228 --only rtn@2-2-8 gptq@2-2-8 --ptq-group-size 32 --tag=-g32  # done rows are skipped
}
case ${PART:?set PART=1, 2 or 3} in
  1) export QG_SHARED_GPU=2 LIMIT=200
     TORCH_LOGS=recompiles bg laq_probe --steps 300 --only laq@2-2-8
     bg ptq228 --only rtn@2-2-8 gptq@2-2-8 --ptq-group-size 32 --tag=-g32
     wait; LIMIT=$(( ${CALL_S:-560} - SECONDS )); shared ;;
  2) LIMIT=${LIMIT:-540}; shared ;;
  3) LIMIT=${LIMIT:-540} QG_SHARED_GPU=1 bg bw1300 --steps 1300 --only quantgpt-init-blockwise@2-2-8 --tag=-s1300 ;;
esac
finish
