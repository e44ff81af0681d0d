#!/bin/bash
# The next device session's runs for issue 5 (section 11 of docs/BENCHMARKS.md ran the previous plan), one
# device call per part, after device-stage's first call; the calls must follow each other within the
# machine's warm time.
#   PART=1: six 300-step 2-2-8 / 8-8-8 runs side by side: the fixed-alpha ablation on quantgpt's own grid
#           (--no-dynamic-scale: the dynamic-scaling claim with only the clip rule changed), 16-feature embedding
#           groups at 2 bits, second seeds of quantgpt and kd at 2-2-8 (the contrastive claim rests on one seed,
#           69.43 against 71.08), lsq and laq at 8-8-8 in 32-column groups (the last baselines not run there)
#   PART=2: the teacher cache's speed (train_speed.py, compiled against cached, batch 32, alone), then the
#           15-minute 2-2-8 run alone (4000 steps), with 16-feature embedding groups if PART=1 found them 1%
#           better than section 9's 69.43 at 300 steps, and with the teacher cache if it was 3% faster;
#           PART=3: the same command, resumed to its end (run_seconds_all in its row is the whole time)
# Usage: source .devcache/p2/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
long() {  # the 15-minute run; its settings are fixed in PART=2 and read back in PART=3
  [ -f runs/long.args ] || python - > runs/long.args <<'PY'
import json, pathlib
rows = {}
p = pathlib.Path("runs/study.jsonl")
if p.is_file():
    rows = {r["name"]: r for r in map(json.loads, p.read_text().splitlines())}
e16 = rows.get("quantgpt-embedding-g16@2-2-8", {}).get("perplexity")
speed = pathlib.Path("runs/speed.jsonl")
tps = {r["variant"]: r.get("tok_per_s") for r in map(json.loads, speed.read_text().splitlines())} if speed.is_file() else {}
use_e16 = bool(e16 and e16 < 0.99 * 69.43)
sets = ["embedding_group_size=16"] if use_e16 else []
if tps.get("cached") and tps.get("compiled") and tps["cached"] > 1.03 * tps["compiled"]:
    sets.append("teacher_cache=true")
print(("--set " + " ".join(sets) + " " if sets else "") + "--tag=-15min-s8" + ("-e16" if use_e16 else ""))
PY
  cat runs/long.args
  QG_SHARED_GPU=1 bg long --steps 4000 --only quantgpt@2-2-8 $(cat runs/long.args)
}
case ${PART:?set PART=1, 2 or 3} in
  1) LIMIT=${LIMIT:-560}; export QG_SHARED_GPU=6
     bg fixed --steps 300 --only quantgpt-fixed-alpha@2-2-8
     bg e16 --steps 300 --only quantgpt-embedding-g16@2-2-8
     bg q228s1 --steps 300 --only quantgpt@2-2-8 --tag=-seed1 --set seed=1
     bg kd228s1 --steps 300 --only kd@2-2-8 --tag=-seed1 --set seed=1
     bg lsq888 --steps 300 --only lsq@8-8-8
     bg laq888 --steps 300 --only laq@8-8-8 ;;
  2) [ -f runs/speed.jsonl ] || timeout 200 python benchmarks/train_speed.py --data $QG_DATA/corpora --steps 15 \
       --variants compiled cached --batch-size 32 --out runs/speed.jsonl > runs/logs/speed.log 2>&1
     tail -4 runs/logs/speed.log; cp runs/speed.jsonl "$OUTDIR/" 2>/dev/null
     LIMIT=$(( ${CALL_S:-560} - SECONDS )); long ;;
  3) LIMIT=${LIMIT:-560}; long ;;
esac
finish
