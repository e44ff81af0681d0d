#!/bin/bash
# The next device session's runs for issue 5 (section 21 of docs/BENCHMARKS.md ran the previous plan, this file at
# commit caf67f3), one device call per part, after device-stage's calls. The calls must follow each other within
# the machine's warm time (30 s): issue each one as soon as the last returns, and read nothing in between. Every run
# trains on common.sh's WikiText-style mix and keeps the checkpoint best on the 960 held lines, now without their
# `<unk>` (common.sh: with them, held-out numbers swung 6% between two seeds whose test numbers were 0.85% apart).
#   PART=1: a teacher adapted alone (300 float steps), then from it four 300-step quantgpt 2-2-8 runs sharing the
#           GPU: compress's defaults (32-column groups, 16-feature table groups, fp16 scales) and the 8-bit-scale
#           layouts (scale_bits 8): 16-column groups and 8-feature table groups at the defaults' storage, and each
#           half of that alone (the other part cheaper). On SmolLM2's weights 8-bit scales add nothing to the
#           start's rounding error while the shorter groups cut it (section 21); the 2-bit table is the largest cost
#           left at 2-2-8 (2-16-8 30.43 against 37.66 after 300 steps).
#   PART=2, 3: the 5000-step run (the 15-minute run: compress's own adaptation, then 5000 steps) with the layout of
#           PART=1's best held-out perplexity among the two storage-matched ones (the defaults, s8-g16-e8), in two
#           calls (on a fresh machine, with no rows to pick from: the defaults). Give PART=3 LIMIT = the device
#           time left less 40 s. STEPS=4000 SFX=-4k: the shorter run that fits 15 minutes with 8-bit scales
#           (5.9 step/s with them against 6.5 without, s17).
# Usage (after device-stage and split-stage.sh): source .devcache/p3/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
TF=runs/study/finetune_16-16-16-s16
pick() {  # the --set of the long run: s8-g16-e8's settings if it held out better than the defaults, else none
  python - <<'PY'
import json, os, pathlib
sfx = os.environ.get("SFX", "")  # e.g. -4k for a shorter long run
files = [pathlib.Path(f) for f in ("benchmarks/results/study_h200_s16.jsonl", "runs/study.jsonl")]  # a fresh machine: s16's rows
rows = {r["name"]: r for f in files if f.is_file() for r in map(json.loads, f.read_text().splitlines())}
held = lambda n: (rows.get(n, {}).get("best_eval") or {}).get("eval_ppl", float("inf"))
if held("quantgpt-s8-g16-e8@2-2-8+-ta-s16") < held("quantgpt@2-2-8+-ta-s16"):
    print(f"--set scale_bits=8 group_size=16 embedding_group_size=8 --tag=-15min-s16-s8{sfx}")
else:
    print(f"--tag=-15min-s16{sfx}")
PY
}
case ${PART:?set PART=1, 2 or 3} in
  1) LIMIT=${LIMIT:-560}; END=$((SECONDS + LIMIT))
     LIMIT=170 QG_SHARED_GPU=1 bg ft --steps 300 --only finetune@16-16-16 --tag=-s16
     wait
     LIMIT=$((END - SECONDS))
     if [ -f $TF/finetune.json ]; then
       export QG_SHARED_GPU=4  # four 2-2-8 runs at most: each takes 28 GiB of the 139
       bg q228 --steps 300 --only quantgpt@2-2-8 --tag=-ta-s16 --model $TF
       for a in s8-g16-e8 s8-g32-e8 s8-g16-e16; do
         bg "$a" --steps 300 --only "quantgpt-$a@2-2-8" --tag=-ta-s16 --model $TF
       done
     else echo "no adapted teacher at $TF: see runs/logs/ft.log" >&2; fi ;;
  2|3) LIMIT=${LIMIT:-575}
     # shellcheck disable=SC2046  # the picked settings are words
     QG_SHARED_GPU=1 bg long --steps "${STEPS:-5000}" --only quantgpt@2-2-8 $(pick) ;;
esac
finish
