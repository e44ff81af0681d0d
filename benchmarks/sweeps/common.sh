# Sourced by the sweep scripts beside it, on the GPU machine after device-stage's assemble.sh (QG_DATA set).
# Rows go to runs/study.jsonl (kept between calls while the machine is warm) and are copied to $OUT with the
# logs; each run is one paper_study process in the background, stopped (with a resumable checkpoint) at
# LIMIT seconds. Set QG_SHARED_GPU to the number of training runs started together (the rows record it) and
# QG_COMMIT to the commit sent. Call `finish` in the same shell as `bg`, never in a pipe: a piped finish waits
# for nothing, and the device tool ends the runs when the command returns.
set -u
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TRANSFORMERS_VERBOSITY=error
OUTDIR=${OUT:-results}
mkdir -p runs/logs "$OUTDIR"
S="python benchmarks/paper_study.py --train-data $QG_DATA/corpora --eval-data $QG_DATA/wikitext2/valid.tokens.txt
   --test-data $QG_DATA/wikitext2/test.raw.txt --runs-dir runs/study --out runs/study.jsonl --skip-done --resume"
bg() {  # bg LOGNAME ARGS...: one study process in the background, stopped at LIMIT seconds (read at each call)
  local log=$1; shift
  timeout -s INT "${LIMIT:-530}" $S "$@" > "runs/logs/$log.log" 2>&1 &
}
finish() {  # wait, then copy rows and logs to $OUT and print a short table
  [ -n "$(jobs -p)" ] || echo "finish: no runs to wait for (called in a pipe or a subshell?)" >&2
  wait
  cp runs/study.jsonl "$OUTDIR/" 2>/dev/null
  tar -czf "$OUTDIR/logs.tgz" runs/logs $(ls runs/study/*/train_log.jsonl 2>/dev/null)
  python - <<'PY'
import json, pathlib
p = pathlib.Path("runs/study.jsonl")
rows = [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []
for r in rows:
    b = r.get("best_eval") or {}
    print(f"{r['name']:40s} ppl {r['perplexity']:10.3f} acc {r['accuracy']:.4f} tokens {r.get('tokens_trained', 0):>10} "
          f"train_s {r.get('train_seconds', 0)!s:>7} best {b}")
PY
}
