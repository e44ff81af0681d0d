#!/bin/bash
# The next device session's runs for issue 5 (section 11 of docs/BENCHMARKS.md ran the previous plan), one
# device call per part, after device-stage's first call; the calls must follow each other within the
# machine's warm time.
#   PART=1: six 300-step 2-2-8 / 8-8-8 runs side by side: the fixed-alpha ablation on quantgpt's own grid
#           (--no-dynamic-scale: the dynamic-scaling claim with only the clip rule changed), 16-feature embedding
#           groups at 2 bits, second seeds of quantgpt and kd at 2-2-8 (the contrastive claim rests on one seed,
#           69.43 against 71.08), lsq and laq at 8-8-8 in 32-column groups (the last baselines not run there)
#   PART=2: the 15-minute 2-2-8 run alone (4000 steps), with 16-feature embedding groups if PART=1 found them
#           1% better than section 9's 69.43 at 300 steps; PART=3: the same command, resumed to its end
#           (run_seconds_all in its row is the whole time over both processes)
# Usage: source .devcache/p2/assemble.sh && QG_COMMIT=<sent commit> PART=1 bash benchmarks/sweeps/goals.sh
source "$(dirname "$0")/common.sh"
long() {  # the 15-minute run; its settings are fixed in PART=2 and read back in PART=3
  [ -f runs/long.args ] || python - > runs/long.args <<'PY'
import json, pathlib
p = pathlib.Path("runs/study.jsonl")
rows = {r["name"]: r for r in map(json.loads, p.read_text().splitlines())} if p.is_file() else {}
e16 = rows.get("quantgpt-embedding-g16@2-2-8", {}).get("perplexity")
print("--set embedding_group_size=16 --tag=-15min-e16" if e16 and e16 < 0.99 * 69.43 else "--tag=-15min-s8")
PY
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
  2|3) LIMIT=${LIMIT:-560}; long ;;
esac
finish
