#!/bin/bash
# The next device session's runs for issue 5 (section 20 of docs/BENCHMARKS.md ran the previous plan, this file at
# commit 4b7a180), one device call per part, after device-stage's calls. The calls must follow each other within
# the machine's warm time (30 s): issue each one as soon as the last returns, and read nothing in between (sections
# 19 and 20 lost the long run that way). Every run trains on common.sh's WikiText-style mix and keeps the checkpoint
# best on the 960 held lines. paper_study runs each row through compress, whose first stage adapts the teacher to
# the text (300 float steps, adapt.py) unless --model names a folder quantgpt adapted.
#   PART=1, 2: the 15-minute 2-2-8 run alone, as a user runs it (compress's defaults: the adaptation, then 5000
#           steps, head_scale off), in two calls (one call may run 600 s). Sections 19 and 20 lost it between the
#           calls; its row's `adapt` holds the first stage's time, so the 15 minutes are measured end to end.
#   PART=3: from the long run's adapted teacher, four 300-step quantgpt runs at 2-x-8 sharing the GPU: the control
#           (compress's defaults), blocks of 2048 (batch 16: the same tokens a step; the test's window: every run
#           so far trained on 1024 and is 2.06x its teacher in the window's first half, 2.16x in the second,
#           section 20), head_scale on (side by side with the control from one teacher; section 17's 5000-step
#           best had it), and 2-16-8 (what the 2-bit tied table costs after training from an adapted teacher),
#           with the teacher's own float row. Give it LIMIT = the device time left less 40 s: a call cut by the
#           device's own limit returns before `finish` copies the rows to $OUT.
#   PART=4: PART=3 on a fresh machine (the long run lost): the teacher adapted first, then the four runs from it.
# Usage (after device-stage and split-stage.sh): source .devcache/p2b/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
LONG=(--steps 5000 --only quantgpt@2-2-8 --tag=-15min-s15)
wave() {  # wave TEACHER: the four 300-step runs from one adapted teacher, sharing the GPU, and its float row
  local t=$1
  export QG_SHARED_GPU=4  # four 2-2-8 runs at most: each takes 28 GiB of the 139 (section 20: a fifth ran out)
  bg q228 --steps 300 --only quantgpt@2-2-8 --tag=-ta-s15 --model "$t"
  bg seq2048 --steps 300 --only quantgpt@2-2-8 --tag=-ta-s15-seq2048 --model "$t" --seq-len 2048 --batch-size 16
  bg hs228 --steps 300 --only quantgpt-head-scale@2-2-8 --tag=-ta-s15 --model "$t"
  bg q2168 --steps 300 --only quantgpt@2-16-8 --tag=-ta-s15 --model "$t"
  bg floatta --only float --tag=-ta-s15 --model "$t"
}
case ${PART:?set PART=1, 2, 3 or 4} in
  1) LIMIT=${LIMIT:-570} QG_SHARED_GPU=1 bg long "${LONG[@]}" ;;
  2) LIMIT=${LIMIT:-575} QG_SHARED_GPU=1 bg long "${LONG[@]}" ;;
  3) TA=runs/study/quantgpt_2-2-8-15min-s15/teacher  # the long run's first stage, written in PART=1
     LIMIT=${LIMIT:-500}
     if [ -f $TA/finetune.json ]; then wave $TA; else echo "no adapted teacher at $TA: see runs/logs/long.log" >&2; fi ;;
  4) LIMIT=${LIMIT:-540}; END=$((SECONDS + LIMIT)); TF=runs/study/finetune_16-16-16-s15
     LIMIT=170 QG_SHARED_GPU=1 bg ft --steps 300 --only finetune@16-16-16 --tag=-s15
     wait
     LIMIT=$((END - SECONDS))
     if [ -f $TF/finetune.json ]; then wave $TF; else echo "no adapted teacher at $TF: see runs/logs/ft.log" >&2; fi ;;
esac
finish
