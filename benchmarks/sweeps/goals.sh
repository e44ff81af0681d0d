#!/bin/bash
# The next device session's runs for issue 5 (section 22 of docs/BENCHMARKS.md ran the previous plan, this file at
# commit b997294: 2000 steps of 16-column groups, 8-feature table groups and 8-bit scales tested 25.82, +19.4% on
# the original teacher's 21.618, in 7.3 minutes end to end), one device call per part, after device-stage's calls.
# The calls must follow each other within the machine's warm time (30 s): issue each one as soon as the last
# returns, and read nothing in between (twice the machine was lost between PART=2 and PART=3, and with it the
# checkpoint). Every run trains on common.sh's WikiText-style mix and keeps the checkpoint best on the 960 held
# lines (without their `<unk>`).
#   PART=1: a teacher adapted alone (300 float steps), then from it quantgpt and kd at 2-2-8 with the 2-bit default
#           layout (16-column groups, 8-feature table groups, 8-bit scales: kd is mds too, so it takes the same
#           layout), STEPS1 (default 600) steps each, the two sharing the GPU: kd is the closest baseline (2.0%
#           behind from one teacher at the old layout, section 20) and has not been run at the new one. One call,
#           for a session whose device time cannot hold PART=2 and 3.
#   PART=2, 3: compress's defaults (since section 22 the layout above at 2-bit weights) for STEPS (default 4000)
#           steps: about 13.5 minutes end to end at the 6.4 step/s of section 22, so the run of the 15-minute goal,
#           in two calls (PART=3 resumes from the checkpoint PART=2 leaves). Give PART=3 LIMIT = the device time
#           left less 40 s; 5000 steps would take about 16 minutes with this layout.
# Usage (after device-stage and split-stage.sh): source .devcache/p3/assemble.sh && QG_COMMIT=<sent commit> PART=2 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
TF=runs/study/finetune_16-16-16-s18
case ${PART:?set PART=1, 2 or 3} in
  1) LIMIT=${LIMIT:-575}; END=$((SECONDS + LIMIT))
     LIMIT=170 QG_SHARED_GPU=1 bg ft --steps 300 --only finetune@16-16-16 --tag=-s18
     wait
     LIMIT=$((END - SECONDS))
     if [ -f $TF/finetune.json ]; then
       export QG_SHARED_GPU=2
       for m in quantgpt kd; do bg "$m" --steps "${STEPS1:-600}" --only "$m@2-2-8" --tag=-ta-s18 --model $TF; done
     else echo "no adapted teacher at $TF: see runs/logs/ft.log" >&2; fi ;;
  2|3) LIMIT=${LIMIT:-575}
     QG_SHARED_GPU=1 bg long --steps "${STEPS:-4000}" --only quantgpt@2-2-8 --tag="-15min-s17${SFX:-}" ;;
  *) echo "PART=$PART: this plan has parts 1, 2 and 3" >&2; exit 2 ;;
esac
finish
