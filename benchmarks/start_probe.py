"""Perplexity of the trainer's start (the student before its first step): how far an init setting starts from
the teacher, with what the trainer does before training (quantizer search, init rtn | gptq | blockwise).

    python benchmarks/start_probe.py "init=null" "init=blockwise block_steps=60" --bits 2-2-8 --device cpu

Each argument is space-separated KEY=VALUE settings of a TrainConfig (values read as YAML), over the probe's defaults (32 calibration blocks of 256
tokens, batch 8). Held-out text: the first --tokens tokens of wikitext2/valid.tokens.txt, windows of 512.
"""
import argparse
import json
import os
import time

from quantgpt import TrainConfig, evaluate, load_float
from quantgpt.data import tokenize_files
from quantgpt.errors import QuantGPTError
from quantgpt.trainer import Trainer

p = argparse.ArgumentParser()
p.add_argument("runs", nargs="+")
p.add_argument("--bits", default="2-2-8")
p.add_argument("--device", default="auto")
p.add_argument("--tokens", type=int, default=8192)
p.add_argument("--out", default="start_probe.json")
args = p.parse_args()
try:
    settings = [TrainConfig.parse_assignments(run.split(), f"setting {run!r}") for run in args.runs]
except QuantGPTError as e:
    raise SystemExit(f"start_probe: {e}")
data = os.environ.get("QG_DATA", "../shared/data")
teacher, tok = load_float("smollm2-135m")
train = tokenize_files(f"{data}/corpora", tok)
held = tokenize_files(f"{data}/wikitext2/valid.tokens.txt", tok)[: args.tokens]
rows = []
for run, setting in zip(args.runs, settings):
    kw = dict(bits=args.bits, calib_samples=32, batch_size=8, seq_len=256, steps=1, device=args.device,
              progress=False, compile=False, out=f"runs/start_probe/{len(rows)}") | setting
    t = time.time()
    tr = Trainer(TrainConfig(model="smollm2-135m", **kw), teacher=teacher, tokenizer=tok, train_ids=train)
    setup = time.time() - t
    r = evaluate(tr.student, held, seq_len=512, progress=False)
    rows.append({"run": run, "perplexity": r["perplexity"], "accuracy": r["accuracy"], "setup_s": round(setup, 1),
                 "blockwise": tr.block_init})
    print(f"{run:50s} ppl {r['perplexity']:12.2f} acc {r['accuracy']:.3f} setup {setup:6.1f} s", flush=True)
with open(args.out, "w") as f:
    json.dump(rows, f, indent=1)
