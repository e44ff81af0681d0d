#!/bin/bash
# The next device session's runs for issue 5 (section 19 of docs/BENCHMARKS.md ran the previous plan, this file at
# commit 7cbb4fe), one device call per part, after device-stage's calls; the calls must follow each other within
# the machine's warm time (30 s), so no part needs a look at the one before. Every run trains on common.sh's
# WikiText-style mix and keeps the checkpoint best on the 960 held lines. paper_study runs each row through
# compress, whose first stage adapts the teacher to the text (300 float steps, adapt.py) unless --model names a
# folder quantgpt adapted.
#   PART=1: every method at 2-2-8 from one adapted teacher, 300 steps: quantgpt adapts its own (compress's
#           defaults), kd, pact, lsq and laq start from that teacher once it is written, five sharing the GPU
#           (section 19: kd 36.58 against section 17's quantgpt 37.57 from a teacher made the same way; here
#           the two run side by side, with the other baselines, none of which has run from an adapted teacher)
#   PART=2: quantgpt and kd 2-2-8 from that teacher, 2000 steps, two sharing the GPU: does the contrastive term
#           pay over a longer run;  PART=3: the same two resumed to their end
# Usage: source .devcache/p2b/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
TA=runs/study/quantgpt_2-2-8-s14/teacher  # PART=1's first stage
case ${PART:?set PART=1, 2 or 3} in
  1) LIMIT=${LIMIT:-540}; export QG_SHARED_GPU=5; T0=$SECONDS
     bg q228 --steps 300 --only quantgpt@2-2-8 --tag=-s14
     while [ ! -f $TA/finetune.json ] && [ $((SECONDS - T0)) -lt 240 ]; do sleep 2; done
     LIMIT=$((LIMIT - (SECONDS - T0)))
     if [ -f $TA/finetune.json ]; then
       for m in kd pact lsq laq; do
         bg "${m}228" --steps 300 --only $m@2-2-8 --tag=-ta-s14 --model $TA
       done
     else echo "no adapted teacher at $TA after 240 s: see runs/logs/q228.log" >&2; fi ;;
  2|3) [ -f $TA/finetune.json ] || echo "no adapted teacher at $TA: see runs/logs/q228.log" >&2
     LIMIT=${LIMIT:-560}; export QG_SHARED_GPU=2
     for m in quantgpt kd; do
       bg "${m}228long" --steps 2000 --only $m@2-2-8 --tag=-ta-2000-s14 --model $TA
     done ;;
esac
finish
