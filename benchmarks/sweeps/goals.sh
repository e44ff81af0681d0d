#!/bin/bash
# The next device session's runs for issue 5's goals, one device call each, in this order (PART=1..3), after
# device-stage's first call; the calls must follow each other within the machine's 30 s warm time.
#   PART=1, PART=2: quantgpt 2-2-8, 4000 steps alone on the GPU (the "under 15 minutes" run: its two segments'
#                   run_seconds add up to the time; the second call resumes the first's checkpoint)
#   PART=3:         quantgpt 4-4-8 at 1500 steps (and at 700 with 16-feature embedding groups) beside the
#                   baselines in 32-column groups at 2-2-8 and 8-8-8,
#                   and the storage-matched 2-bit pair (full grid g32 against asym g64: 2.5 bits a weight each);
#                   about two calls of work: run PART=3 again and the runs cut by LIMIT resume where they stopped
# Usage: source .devcache/p2/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
case ${PART:?set PART=1, 2 or 3} in
  1|2) export QG_SHARED_GPU=1 LIMIT=${LIMIT:-540} ;;
  3) export QG_SHARED_GPU=6 LIMIT=${LIMIT:-540} ;;
esac
source "$(dirname "$0")/common.sh"
case $PART in
  1|2) bg q228_15min --steps 4000 --only quantgpt@2-2-8 --tag=-15min ;;
  3) bg q448 --steps 1500 --only quantgpt@4-4-8 --tag=-s1500
     bg q448e16 --steps 700 --only quantgpt@4-4-8 --set embedding_group_size=16 --tag=-e16-s700
     bg base228 --steps 300 --only pact@2-2-8 kd@2-2-8 --tag=-g32
     bg base888 --steps 300 --only pact@8-8-8 kd@8-8-8 --tag=-g32
     bg full228 --steps 300 --only quantgpt-full-grid@2-2-8
     bg laq228 --steps 300 --only laq@2-2-8 lsq@2-2-8 --tag=-g32
     bg ptq888 --only gptq@8-8-8 --ptq-group-size 32 --tag=-g32 ;;
esac
finish
