#!/bin/bash
# The next device session's runs for issue 5 (section 17 of docs/BENCHMARKS.md ran the previous plan, this file at
# commit 86c8769), one device call per part, after device-stage's first call; the calls must follow each other
# within the machine's warm time (30 s). Every run trains on common.sh's WikiText-style mix and keeps the
# checkpoint best on the 960 held lines. paper_study runs each row through compress, whose first stage adapts
# the teacher to the text (300 float steps, adapt.py) unless --model names a folder quantgpt adapted.
#   PART=1: the 15-minute 2-2-8 run alone, as a user runs it: compress's defaults, the adaptation included
#           (section 17's best, 27.57, had head_scale on; this is its twin without it), 5000 steps;
#   PART=2: resumed to its end (the adaptation is kept). The row's `adapt` has the first stage's time, so the
#           15 minutes are measured end to end (section 17: 13.5 min of training, 15.3 of process time)
#   PART=3 (the rest of the device time): from that run's adapted teacher, the baselines that came closest,
#           300 steps, six sharing the GPU: kd 2-2-8 (tied quantgpt on the style mix, section 15), quantgpt,
#           laq, pact and lsq 4-4-8 (laq was 3.4% behind, section 15), and quantgpt 8-8-8 at lr 1e-4 (every
#           8-bit run from the adapted teacher kept step 60 of 300 at 3e-4, section 17: 17.45); quantgpt 2-2-8
#           from the adapted teacher after 300 steps is section 17's 37.57
# Usage: source .devcache/p2/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
LONG=(--only quantgpt@2-2-8 --tag=-15min-s13)
TA=runs/study/quantgpt_2-2-8-15min-s13/teacher  # the long run's first stage, written in PART=1
case ${PART:?set PART=1, 2, 3 or 4} in
  1) LIMIT=${LIMIT:-560} QG_SHARED_GPU=1 bg long --steps 5000 "${LONG[@]}" ;;
  2) LIMIT=${LIMIT:-580} QG_SHARED_GPU=1 bg long --steps 5000 "${LONG[@]}" ;;
  3) [ -f $TA/finetune.json ] || echo "no adapted teacher at $TA: see runs/logs/long.log" >&2
     LIMIT=${LIMIT:-500}; export QG_SHARED_GPU=6
     bg kd228 --steps 300 --only kd@2-2-8 --tag=-ta --model $TA
     for m in quantgpt laq pact lsq; do
       bg "${m}448" --steps 300 --only $m@4-4-8 --tag=-ta --model $TA
     done
     bg q888lr --steps 300 --only quantgpt@8-8-8 --tag=-ta-lr1e-4 --model $TA --set lr=1e-4 ;;
  4) # PART=3 cut to the closest baselines on a fresh machine (the first machine went back before PART=2's run
     # ended, taking PART=1's teacher with it): quantgpt 4-4-8 adapts its own teacher (compress's defaults),
     # then laq 4-4-8 and kd 2-2-8 start from that teacher as soon as it is written, three sharing the GPU
     LIMIT=${LIMIT:-420}; export QG_SHARED_GPU=3; T0=$SECONDS
     TA4=runs/study/quantgpt_4-4-8-s13/teacher
     bg q448 --steps 300 --only quantgpt@4-4-8 --tag=-s13
     while [ ! -f $TA4/finetune.json ] && [ $((SECONDS - T0)) -lt 240 ]; do sleep 2; done
     LIMIT=$((LIMIT - (SECONDS - T0)))
     if [ -f $TA4/finetune.json ]; then
       bg laq448 --steps 300 --only laq@4-4-8 --tag=-ta-s13 --model $TA4
       bg kd228 --steps 300 --only kd@2-2-8 --tag=-ta-s13 --model $TA4
     else echo "no adapted teacher at $TA4 after 240 s: see runs/logs/q448.log" >&2; fi ;;
esac
finish
