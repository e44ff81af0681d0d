# Sourced by the sweep scripts beside it, on the GPU machine after device-stage's assemble.sh (QG_DATA set).
# Rows go to runs/study.jsonl (kept between calls while the machine is warm) and are copied to $OUT with the
# logs; each run is one paper_study process in the background, stopped (with a resumable checkpoint) at
# LIMIT seconds. Set QG_SHARED_GPU to the number of training runs started together (the rows record it) and
# QG_COMMIT to the commit sent. `finish` waits for every run `bg` started in this call, by the process ids `bg`
# writes down, so it works in a pipe too (`finish | tail`: a subshell, which `wait` alone could not wait from; the
# device tool ends the runs when the command returns, which twice lost a wave that way).
set -u
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TRANSFORMERS_VERBOSITY=error
OUTDIR=${OUT:-results}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # benchmarks/
mkdir -p runs/logs "$OUTDIR"
: > runs/bg_pids  # the runs of this call (runs/ outlives a call while the machine is warm)
# The study's training text (BENCHMARKS.md section 14): `corpora`, the Wikipedia excerpt twice more, and the
# first 2800 lines of WikiText-2's validation split twice (`<unk>` removed: WikiText's formatting, which the test
# text has); the best checkpoint is chosen on the other 960 lines, `<unk>` removed too since section 22 (63,110
# tokens; through section 21 they kept their 3128 `<unk>`, about 14% of the scored tokens, which the test text
# does not have and no run trained on: two seeds of one run held out 37.04 and 34.94 where they tested 37.82 and
# 37.50). A run's own --train-data / --eval-data replace these; its own --set adds to them.
WIKI=$QG_DATA/corpora/wiki_excerpt.txt
VALID=$QG_DATA/wikitext2/valid.tokens.txt
[ -f runs/valid_held_nounk.txt ] || { head -n 2800 "$VALID" | sed 's/ <unk>//g' > runs/valid_train.txt
  tail -n +2801 "$VALID" | sed 's/ <unk>//g' > runs/valid_held_nounk.txt; }
MIX=("$QG_DATA/corpora" "$WIKI" "$WIKI")
STYLE=("${MIX[@]}" runs/valid_train.txt runs/valid_train.txt)
S="python benchmarks/paper_study.py --train-data ${STYLE[*]} --eval-data runs/valid_held_nounk.txt --set eval_tokens=65536
   --test-data $QG_DATA/wikitext2/test.raw.txt --runs-dir runs/study --out runs/study.jsonl --skip-done --resume"
# The GPU's SM clock (MHz), power and its limit (W) and temperature (C) every 2 s while this call runs, a line for
# each GPU (PART=4 runs on several), led by the epoch second, which the train logs' `time` shares, and the GPU's
# index: benchmarks/gpu_clocks.py lines them up with the steps (whether a run's later steps are slower because the
# clock fell). In runs/logs, so logs.tgz carries it; finish stops it.
SAMPLER=
if command -v nvidia-smi >/dev/null 2>&1; then
  # (the lines are written by the loop's own shell, not by a pipe's child, so that once finish kills it nothing
  # more is written)
  ( while :; do t=$(date +%s.%N | cut -c1-14)
      while IFS= read -r line; do [ -n "$line" ] && echo "$t,$line"; done <<< "$(nvidia-smi \
        --query-gpu=index,clocks.sm,power.draw,power.limit,temperature.gpu --format=csv,noheader,nounits 2>/dev/null)"
      sleep 2; done ) > "runs/logs/gpu_$(date +%s).csv" &
  SAMPLER=$!
fi
bg() {  # bg LOGNAME ARGS...: one study process in the background, stopped at LIMIT seconds (read at each call)
  local log=$1; shift
  timeout -s INT "${LIMIT:-530}" $S "$@" > "runs/logs/$log.log" 2>&1 &
  echo $! >> runs/bg_pids
}
wait_runs() {  # wait for this call's runs (from any shell). Not a bare `wait`: that waits for the GPU sampler too,
  local pid   # which never ends (session 34's PART=1 call hung so until its 300 s limit, its teacher done at 88 s)
  for pid in $(cat runs/bg_pids); do
    while kill -0 "$pid" 2>/dev/null; do sleep 2; done
  done
}
finish() {  # wait for this call's runs, then copy rows and logs to $OUT and print a short table
  [ -s runs/bg_pids ] || echo "finish: no runs were started in this call" >&2
  wait_runs
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  wait
  cp runs/study.jsonl "$OUTDIR/" 2>/dev/null
  tar -czf "$OUTDIR/logs.tgz" runs/logs $(ls runs/study/*/train_log.jsonl 2>/dev/null)
  # KEEP_MODEL=RUN_DIR: that run's packed model comes back too (2-2-8 SmolLM2: 52.5 MiB, over the 16 MiB a file
  # may have), as model.safetensors.part00, 01... of 15 MiB and model_files.tgz (its config, manifest and
  # tokenizer, and kept_run.txt: the run's folder name), cut by stage_model.py --flat. Here,
  # benchmarks/fetch_model.py FILES_AT puts them together under .devcache/models/RUN, which quantgpt loads on the
  # CPU (generation samples, evaluations, analyses without device time)
  [ -n "${KEEP_MODEL:-}" ] && python "$BENCH/stage_model.py" "$KEEP_MODEL" --flat 15 --to "$OUTDIR"
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
