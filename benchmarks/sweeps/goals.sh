#!/bin/bash
# The next device session's runs for issue 5 (section 19 of docs/BENCHMARKS.md ran the previous plan, this file at
# commit 7cbb4fe), one device call per part, after device-stage's calls. The calls must follow each other within
# the machine's warm time (30 s): issue each one as soon as the last returns, and read nothing in between (section
# 19 lost a run that way). Every run trains on common.sh's WikiText-style mix and keeps the checkpoint best on the
# 960 held lines. paper_study runs each row through compress, whose first stage adapts the teacher to the text
# (300 float steps, adapt.py) unless --model names a folder quantgpt adapted.
#   PART=1, 2: the 15-minute 2-2-8 run alone, as a user runs it (compress's defaults: the adaptation, then 5000
#           steps, head_scale off), in two calls. Section 19's twin was cut at step 4652, and its first segment
#           was slowed by the compile-limit bug fixed since. The row's `adapt` holds the first stage's time, so
#           the 15 minutes are measured end to end.
#   PART=3: the run's last steps, if PART=2 did not end it; then, from its adapted teacher, every method at 2-2-8
#           for 300 steps, in two waves of three sharing the GPU (four 2-2-8 runs at most fit). This puts quantgpt and kd side by side from one teacher
#           (section 19: kd 36.58 against section 17's quantgpt 37.57, from two teachers made the same way);
#           pact, lsq and laq have not run from an adapted teacher. A third run in the first wave trains quantgpt on blocks of
#           2048 (batch 16: the same tokens a step), the test's window: every run so far trained on 1024, and
#           each row now has the test perplexity of each half of the window (`perplexity_halves`), the two
#           teachers' too (float rows). Give it LIMIT = the device time left less 40 s: a call cut by the
#           device's own limit returns before `finish` copies the rows to $OUT.
# Usage (after device-stage and split-stage.sh): source .devcache/p2b/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
LONG=(--steps 5000 --only quantgpt@2-2-8 --tag=-15min-s14)
TA=runs/study/quantgpt_2-2-8-15min-s14/teacher  # the long run's first stage, written in PART=1
case ${PART:?set PART=1, 2, 3 or 4} in
  1) LIMIT=${LIMIT:-570} QG_SHARED_GPU=1 bg long "${LONG[@]}" ;;
  2) LIMIT=${LIMIT:-575} QG_SHARED_GPU=1 bg long "${LONG[@]}" ;;
  3) LIMIT=${LIMIT:-500}; END=$((SECONDS + LIMIT))  # each wave gets the time left to END
     QG_SHARED_GPU=1 bg long3 "${LONG[@]}"  # --skip-done: returns at once when PART=2 ended the run
     wait
     LIMIT=$((END - SECONDS))
     if [ ! -f $TA/finetune.json ]; then echo "no adapted teacher at $TA: see runs/logs/long.log" >&2
     elif [ $LIMIT -lt 200 ]; then echo "$LIMIT s left after the long run: no baselines" >&2
     else
       # four 2-2-8 runs at most share the GPU: each takes 28 GiB of its 139 (section 20: the fifth ran out)
       export QG_SHARED_GPU=3
       for m in quantgpt kd; do
         bg "${m}228" --steps 300 --only $m@2-2-8 --tag=-ta-s14 --model $TA
       done
       # the same tokens a step in blocks as long as the test's windows (the held-out text is then read in them too)
       bg seq2048 --steps 300 --only quantgpt@2-2-8 --tag=-ta-s14-seq2048 --model $TA --seq-len 2048 --batch-size 16
       wait; LIMIT=$((END - SECONDS))
       for m in pact lsq laq; do
         bg "${m}228" --steps 300 --only $m@2-2-8 --tag=-ta-s14 --model $TA
       done
       # the two teachers' test perplexity by half window, beside the students'
       bg floatta --only float --tag=-ta-s14 --model $TA
       bg float --only float --tag=-s14
     fi ;;
  4) # one call on a fresh machine (the long run's machine was lost): a teacher adapted alone, then every method
     # at 2-2-8 from it, four sharing the GPU and then laq; the original teacher's float row beside the adaptation
     LIMIT=${LIMIT:-540}; END=$((SECONDS + LIMIT)); TF=runs/study/finetune_16-16-16-s14
     QG_SHARED_GPU=1 bg float --only float --tag=-s14
     LIMIT=170 QG_SHARED_GPU=1 bg ft --steps 300 --only finetune@16-16-16 --tag=-s14
     wait
     LIMIT=$((END - SECONDS))
     if [ ! -f $TF/finetune.json ]; then echo "no adapted teacher at $TF: see runs/logs/ft.log" >&2
     else
       export QG_SHARED_GPU=4  # as run in section 20 it was five, and laq ran out of GPU memory: four at most
       for m in quantgpt kd pact lsq; do
         bg "${m}228" --steps 300 --only $m@2-2-8 --tag=-ta-s14 --model $TF
       done
       wait; LIMIT=$((END - SECONDS)) QG_SHARED_GPU=1 bg laq228 --steps 300 --only laq@2-2-8 --tag=-ta-s14 --model $TF
     fi ;;
esac
finish
