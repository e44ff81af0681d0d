#!/bin/bash
# The next device session's runs for issue 5 (section 10 of docs/BENCHMARKS.md ran the previous plan), one
# device call per part, after device-stage's first call; the calls must follow each other within the
# machine's 30 s warm time.
#   PART=1: laq@2-2-8 alone for 180 s with TORCH_LOGS=recompiles (its steps were 4x slower than the other
#           methods' on the shared GPU in section 10), then six shared processes: the block-wise start at
#           2-2-8 (300 steps, against section 9's 69.43 from the float weights); 4-4-8 at the new default
#           (16-feature embedding groups) for kd, pact and laq beside quantgpt's second seed and kd's; the
#           embedding-bits ablations 2-16-8 and 2-4-8 on the asym g32 layout; 2-2-8 with 16-feature
#           embedding groups (4 bits per embedding weight instead of 3)
#   PART=2: the same command again: the runs LIMIT cut continue (--skip-done --resume)
#   Then, if the block-wise start beats 69.43 at 300 steps: the 15-minute run with it (4000 steps alone,
#   `--set init=blockwise --tag=-bw-15min`, two calls as in section 10; run_seconds_all gives its whole time).
# Usage: source .devcache/p2/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
shared() {
  export QG_SHARED_GPU=6
  bg q228bw --steps 300 --only quantgpt-init-blockwise@2-2-8
  bg q448 --steps 700 --only quantgpt@4-4-8 kd@4-4-8 --tag=-e16-s700-seed1 --set seed=1
  bg kd448 --steps 700 --only kd@4-4-8 --tag=-e16-s700
  bg pact_laq448 --steps 300 --only pact@4-4-8 laq@4-4-8 --tag=-e16
  bg emb --steps 300 --only quantgpt@2-16-8 quantgpt@2-4-8 --tag=-asym32
  bg q228e16 --steps 300 --only quantgpt@2-2-8 --set embedding_group_size=16 --tag=-e16
}
case ${PART:?set PART=1 or 2} in
  1) LIMIT=180 QG_SHARED_GPU=1 TORCH_LOGS=recompiles bg laq_probe --steps 300 --only laq@2-2-8 --tag=-probe
     wait; LIMIT=$(( ${CALL_S:-560} - SECONDS )); shared ;;
  2) LIMIT=${LIMIT:-540}; shared ;;
esac
finish
