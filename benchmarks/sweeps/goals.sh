#!/bin/bash
# The next device session's runs for issue 5 (section 23 of docs/BENCHMARKS.md ran the previous plan, this file at
# commit 07ea4da: from one adapted teacher, 600 steps each at the 2-bit default layout, kd tested 27.38 and
# quantgpt 28.02, held-out 30.51 against 31.35, kd ahead at every evaluation), one device call per part, after
# device-stage's calls. The calls must follow each other within the machine's warm time (30 s): issue each one as
# soon as the last returns, and read nothing in between (three times the machine was lost between PART=2 and
# PART=3, and with it the checkpoint). Every run trains on common.sh's WikiText-style mix and keeps the checkpoint
# best on the 960 held lines (without their `<unk>`).
#   PART=1: a teacher adapted alone (300 float steps, as section 23's: adaptation repeats to 0.01% in test
#           perplexity), then from it two 600-step 2-2-8 runs sharing the GPU: kd with seed 1 (is section 23's lead
#           more than seed spread?) and quantgpt at lambda 0.03 (between section 23's 0.1 and kd's 0; at 0.1 the
#           student's token representations spread past the teacher's, mean pairwise cosine 0.35 against 0.505,
#           while kd's stay more alike than the teacher's, 0.63). About 450 s, as section 23's call.
#   PART=2, 3: STEPS (default 4000) steps of the 2-bit setting PART=1 picks (pick below: the lowest held-out of
#           lambda 0.1, 0.03 and 0, kd's two seeds averaged; on a machine without PART=1's rows, compress's
#           defaults): about 13.5 minutes end to end at section 22's 6.4 step/s, so the run of the 15-minute goal,
#           in two calls (PART=3 resumes from the checkpoint PART=2 leaves). Give PART=3 LIMIT = the device time
#           left less 40 s.
# Usage (after device-stage and split-stage.sh): source .devcache/p3/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
TF=runs/study/finetune_16-16-16-s19
pick() {  # the long run's --only and --tag: section 23's rows (not on this machine) are constants here
  python - <<'PY'
import json, pathlib
p = pathlib.Path("runs/study.jsonl")
rows = {r["name"]: r for r in map(json.loads, p.read_text().splitlines())} if p.is_file() else {}
held = lambda n: (rows.get(n, {}).get("best_eval") or {}).get("eval_ppl")
kd1, l03 = held("kd@2-2-8+-ta-s19-seed1"), held("quantgpt-lambda0.03@2-2-8+-ta-s19")
choice = {"quantgpt@2-2-8": 31.347}  # section 23: quantgpt at lambda 0.1 (the default), seed 0
if kd1 is not None:
    choice["kd@2-2-8"] = (30.512 + kd1) / 2  # section 23's seed 0 and this call's seed 1
if l03 is not None:
    choice["quantgpt-lambda0.03@2-2-8"] = l03
best = min(choice, key=choice.get) if len(choice) == 3 else "quantgpt@2-2-8"
print(f"--only {best} --tag=-15min-s19")
PY
}
case ${PART:?set PART=1, 2 or 3} in
  1) LIMIT=${LIMIT:-575}; END=$((SECONDS + LIMIT))
     LIMIT=170 QG_SHARED_GPU=1 bg ft --steps 300 --only finetune@16-16-16 --tag=-s19
     wait
     LIMIT=$((END - SECONDS))
     if [ -f $TF/finetune.json ]; then
       export QG_SHARED_GPU=2
       bg kd1 --steps "${STEPS1:-600}" --only kd@2-2-8 --tag=-ta-s19-seed1 --model $TF --set seed=1
       bg l03 --steps "${STEPS1:-600}" --only quantgpt-lambda0.03@2-2-8 --tag=-ta-s19 --model $TF
     else echo "no adapted teacher at $TF: see runs/logs/ft.log" >&2; fi ;;
  2|3) LIMIT=${LIMIT:-575}
     # shellcheck disable=SC2046  # the picked arguments are words
     QG_SHARED_GPU=1 bg long --steps "${STEPS:-4000}" $(pick) ;;
  *) echo "PART=$PART: this plan has parts 1, 2 and 3" >&2; exit 2 ;;
esac
finish
